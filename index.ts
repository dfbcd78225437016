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
export type { HugetlbOptions, MemoryKind, SharedRegion, ShmemOptions } from './lib/region'
export { Region } from './lib/region'
export { type Adoption, type AdoptOptions, adoptFd, HandshakeListener, listen, type Peer, type RemoteRange, receive } from './lib/remote'
export {
  type FileSourceOptions,
  type ObjectSourceStats,
  type ObjectStoreCredentials,
  type ObjectStoreRetryOptions,
  type ObjectStoreSourceOptions,
  Source,
} from './lib/source'
export type {
  ByteRange,
  DirtyOptions,
  FaultHandler,
  ForkEvent,
  HandleOptions,
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
  SharedUserfaultfd,
  UffdStats,
  UserfaultfdEvents,
  UserfaultfdOptions,
  WakeOption,
  WorkerHandlerOptions,
} from './lib/userfaultfd'
export { Userfaultfd } from './lib/userfaultfd'
