/**
 * userfaultfd for Node.js and Bun: handle Linux page faults in TypeScript.
 *
 * Register memory with a {@link Userfaultfd}; when a thread touches a page that is not there, the
 * kernel stops it and your handler decides what the page holds ({@link Fault.copy}, zeros, or the
 * page cache). Use it to load data lazily on first touch, serve another process's memory, or
 * track writes.
 *
 * @packageDocumentation
 */

export type { FaultInfo, UffdErrorCode, UffdErrorOptions, UffdNoticeCode } from './lib/errors'
export { UffdError } from './lib/errors'
export type { ContinueOptions, FaultKind, MapOptions, MoveOptions, RangeOptions as FaultRangeOptions, WakeOptions } from './lib/fault'
export { Fault } from './lib/fault'
export type { FeatureName, IoctlName, ProbeResult } from './lib/features'
export {
  type FirecrackerOptions,
  FirecrackerServer,
  type FirecrackerServerEvents,
  serveFirecracker,
  type VmSummary,
} from './lib/firecracker'
export type { HugetlbOptions, MemoryKind, SharedRegion, ShmemOptions } from './lib/region'
export { Region } from './lib/region'
export { type Adoption, type AdoptOptions, adoptFd, HandshakeListener, listen, type Peer, type RemoteRange, receive } from './lib/remote'
export { type FileSourceOptions, Source } from './lib/source'
export {
  fingerprintOf,
  type MemoryFingerprint,
  readTrace,
  TRACE_FORMAT,
  TRACE_VERSION,
  TraceRecorder,
  type WorkingSetTrace,
  writeTrace,
} from './lib/trace'
export type {
  ByteRange,
  DirtyOptions,
  FaultHandler,
  ForkEvent,
  HandleOptions,
  LatencyReport,
  MapOption,
  MoveOption,
  PrefetchOptions,
  PrefetchResult,
  RangeEvent,
  RangeOptions,
  ReadaheadOptions,
  RegisterOptions,
  Registration,
  RemapEvent,
  ServeOptions,
  SharedUserfaultfd,
  UffdStats,
  UserfaultfdEvents,
  UserfaultfdOptions,
  WakeOption,
  WorkerHandlerOptions,
} from './lib/userfaultfd'
export { Userfaultfd } from './lib/userfaultfd'
