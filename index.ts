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

export type { CredentialProvider, ObjectStoreCredentials, ProvidedCredentials } from './lib/credentials'
export type { FaultHandler, InstalledHandler } from './lib/dispatch'
export type { FaultInfo, UffdErrorCode, UffdErrorOptions, UffdNoticeCode } from './lib/errors'
export { UffdError } from './lib/errors'
export type { RangeEvent, RemapEvent } from './lib/events'
export type { FaultKind } from './lib/fault'
export { Fault } from './lib/fault'
export type { FeatureName, FeatureSet, IoctlName, IoctlSet, NameSet, ProbeResult } from './lib/features'
export {
  type FirecrackerOptions,
  FirecrackerServer,
  type FirecrackerServerEvents,
  type KeeperLinked,
  serveFirecracker,
  type TraceWritten,
  type VmStoreCounts,
  type VmSummary,
} from './lib/firecracker'
export type {
  AcceptOptions,
  AdoptFdOptions,
  AdoptOptions,
  ByteRange,
  ContinueOptions,
  DirtyOptions,
  FaultRangeOptions,
  FileSourceOptions,
  FlushOptions,
  HandleOptions,
  HugetlbOptions,
  MapOption,
  MapOptions,
  MoveOption,
  MoveOptions,
  PrefetchOptions,
  RangeOptions,
  ReadaheadOptions,
  ReceiveOptions,
  RegisterOptions,
  RemoteRange,
  ResidencyLimit,
  ServeOptions,
  ShmemOptions,
  UserfaultfdOptions,
  WakeOption,
  WakeOptions,
  WorkerHandlerOptions,
} from './lib/options'
export type { MemoryKind, SharedRegion } from './lib/region'
export { Region } from './lib/region'
export { activatedSocket, adoptFd, HandshakeListener, type ListenOptions, listen, receive, type SocketOwner } from './lib/remote'
export { type PushSnapshotOptions, type PushSnapshotReport, pushSnapshot } from './lib/snapshot'
export {
  type ObjectFallbackPage,
  type ObjectSourceStats,
  type ObjectStoreConnectionOptions,
  type ObjectStoreRetryOptions,
  type ObjectStoreSource,
  type ObjectStoreSourceOptions,
  Source,
} from './lib/source'
export type { LatencyReport, ResidencyStats, UffdStats } from './lib/stats'
export {
  fingerprintOf,
  type MemoryFingerprint,
  readTrace,
  TRACE_FORMAT,
  TRACE_VERSION,
  type TracedMemory,
  TraceRecorder,
  type WorkingSetTrace,
  writeTrace,
} from './lib/trace'
export type {
  Adoption,
  ForkEvent,
  Peer,
  PrefetchResult,
  Registration,
  SharedUserfaultfd,
  UserfaultfdEvents,
} from './lib/userfaultfd'
export { Userfaultfd } from './lib/userfaultfd'
