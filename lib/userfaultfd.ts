// Userfaultfd: the public face of one userfaultfd and its fault loop.
import { EventEmitter } from 'node:events'
import { isAbsolute, join, resolve as resolvePath } from 'node:path'
import { pathToFileURL } from 'node:url'
import { isMainThread, type ResourceLimits, Worker } from 'node:worker_threads'
import type { JsDispatch, JsEvent, NativeAdoption, NativeStats, NativeUffd } from './binding'
import { argumentError, call, fromFailure, fromNative, fromNotice, UffdError } from './errors'
import { FAULT_FIELDS, Fault } from './fault'
import type { FeatureName, IoctlName, ProbeResult } from './features'
import { native } from './loader'
import { nativeRegionOf, Region } from './region'
// A cycle that is only followed at call time: remote.ts builds Userfaultfd objects.
import { type Adoption, type AdoptOptions, adoptFd, fromAdoption, type RemoteRange } from './remote'
import { Source } from './source'
import { TraceRecorder } from './trace'
import { bytesOf, integer, optionalBoolean, optionalInteger, options as optionsOf } from './validate'

/** Options of `new Userfaultfd()`: the features to negotiate, the permission, and the fallback. */
export interface UserfaultfdOptions {
  /**
   * Features that must be enabled (the call throws EOPNOTSUPP if the kernel lacks one). Whatever
   * else the kernel offers and changes nothing by being on (THREAD_ID, MISSING_SHMEM, MINOR_*,
   * EXACT_ADDRESS, WP_*, POISON, MOVE) is enabled anyway; events, SIGBUS and WP_ASYNC only on request.
   */
  features?: FeatureName[]
  /**
   * `true`: handle faults from user mode only (needs no privilege). `false`: kernel-mode faults
   * too, or throw. Default: kernel-mode faults where permitted, else user mode only.
   */
  userModeOnly?: boolean
  /**
   * How a fault is resolved when its handler cannot (throws, rejects, returns without resolving,
   * times out, or is the faulting thread): `'zero'` (default) maps zeros, or the page cache for a
   * minor fault; `'sigbus'` poisons the page so the faulting thread gets SIGBUS.
   */
  fallback?: 'zero' | 'sigbus'
  /** How long a fault may wait for its handler before the fallback resolves it. Default 30000; 0 for no limit. */
  timeoutMs?: number
  /**
   * Microseconds the fault loop polls for messages before it sleeps. Waking a sleeping thread costs
   * tens of microseconds on a virtual CPU; spinning trades a core's time for latency. Default 0.
   */
  spinMicros?: number
}

/** Options of {@link Userfaultfd.register}: the fault modes (`UFFDIO_REGISTER_MODE_*`), the range, and a native source. */
export interface RegisterOptions {
  /** Report faults on missing pages. Default: true unless `minor` or `wp` is given. */
  missing?: boolean
  /** Report minor faults (page in the page cache, not mapped here): shmem and hugetlb only. */
  minor?: boolean
  /** Report writes to write-protected pages. */
  wp?: boolean
  /** Where the registered range starts in the region (page-aligned). Default 0. */
  offset?: number
  /** Length of the range (a multiple of the page size). Default: to the region's end. */
  length?: number
  /** Resolve the range's faults natively on the loop thread (no JavaScript per fault). */
  source?: Source
  /** With a source: pages mapped per fault (clipped to the range), growing on sequential faults if `adaptive`. */
  readahead?: ReadaheadOptions
  /**
   * With a bytes or file source: faults on whole pages past the source's end go to the handler
   * (set with {@link Userfaultfd.handle}) instead of being mapped as zeros. Faults of a kind the
   * source does not serve (a wp fault, a minor fault for a bytes source) always go to the handler.
   * Default false.
   */
  fallthrough?: boolean
}

/** How many pages a native source maps per fault: the `readahead` of {@link RegisterOptions}. */
export interface ReadaheadOptions {
  /** Pages per fault to start with. Default 1. */
  pages?: number
  /**
   * Double the window on each sequential fault, halve it on each jump (random access), down to one
   * page. The window is the registration's: several threads reading it sequentially at once look
   * like jumps to it. Default false.
   */
  adaptive?: boolean
  /** The largest window in pages. Default 64 x `pages`. */
  maxPages?: number
}

/** Options of {@link Userfaultfd.serve}: the source, how it reads ahead, and the range. */
export interface ServeOptions {
  /** Where the bytes come from. */
  source: Source
  /** Pages mapped per fault, as for {@link RegisterOptions.readahead}. */
  readahead?: ReadaheadOptions
  /** Faults on whole pages past the source's end go to the handler. Default false. */
  fallthrough?: boolean
  /**
   * What a range removed since it was mapped (EVENT_REMOVE: a VM's balloon, `madvise(MADV_DONTNEED)`)
   * gets on its next fault: `'zeros'`, as the memory's owner sees it (the default for another
   * process's memory), or the source's bytes again (`'source'`, the default for this process's).
   */
  afterRemove?: 'zeros' | 'source'
  /** Records the pages faults map, in the order they were first touched. */
  trace?: TraceRecorder
  /** Where the range starts in the region (page-aligned). Default 0. */
  offset?: number
  /** Its length. Default: to the region's end. */
  length?: number
}

/** Native sources' fault latency, and when the first fault came. */
export interface LatencyReport {
  /** Faults a native source resolved (and timed). */
  readonly count: number
  /** Median time from reading a fault to resolving it, in microseconds (a quarter-octave bucket's lower edge). */
  readonly p50Micros: number
  /** 99th percentile of the same. */
  readonly p99Micros: number
  /** Milliseconds from opening (or adopting) the userfaultfd to its first fault; undefined before one. */
  readonly firstFaultMs: number | undefined
}

/** Options of {@link Userfaultfd.unregister}: a page-aligned part of the region. */
export interface RangeOptions {
  /** Where the range starts in the region (page-aligned). Default 0. */
  offset?: number
  /** Length of the range (a multiple of the page size). Default: to the region's end. */
  length?: number
}

/** What the kernel allows on a registered range. */
export interface Registration {
  /** The ioctls the kernel allows on the range (UFFDIO_REGISTER's `ioctls`), e.g. COPY, ZEROPAGE, WAKE. */
  readonly ioctls: ReadonlySet<IoctlName>
}

/** Options of {@link Userfaultfd.zero}, {@link Userfaultfd.poison} and {@link Userfaultfd.writeProtect}. */
export interface WakeOption {
  /** Wake the threads waiting on the range. Default true; false is `*_MODE_DONTWAKE`. */
  wake?: boolean
}

/** Options of {@link Userfaultfd.copy} (UFFDIO_COPY) and {@link Userfaultfd.continue} (UFFDIO_CONTINUE). */
export interface MapOption extends WakeOption {
  /** Map the pages write-protected (`COPY_MODE_WP`, `CONTINUE_MODE_WP`). Default false. */
  writeProtect?: boolean
}

/** Options of {@link Userfaultfd.move} (UFFDIO_MOVE). */
export interface MoveOption extends WakeOption {
  /** Skip source pages that are not populated instead of failing with ENOENT. Default false. */
  allowSourceHoles?: boolean
}

/** Options of {@link Userfaultfd.dirtyPages}. */
export interface DirtyOptions {
  /** Protect the reported pages again, so that the next call reports only later writes. Default false. */
  clear?: boolean
  /** `'scan'` (PAGEMAP_SCAN, Linux 6.7), `'pagemap'` (the uffd-wp bit of /proc/self/pagemap), or `'auto'` (default). */
  method?: 'auto' | 'scan' | 'pagemap'
}

/** A page-aligned range of a region, for {@link Userfaultfd.prefetch}. */
export interface ByteRange {
  /** Where the range starts in the region (page-aligned). */
  offset: number
  /** Its length in bytes (a multiple of the page size). */
  length: number
}

/** Options of {@link Userfaultfd.prefetch}. */
export interface PrefetchOptions {
  /** Where the bytes come from. Default: the source each range was registered with. */
  source?: Source
  /** Pages per ioctl. Default 64 (1 on hugetlbfs). */
  chunkPages?: number
  /** Stops the prefetch after the chunk it is mapping; the promise then resolves with `stopped`. */
  signal?: AbortSignal
}

/** What {@link Userfaultfd.prefetch} did. */
export interface PrefetchResult {
  /** Bytes the prefetch mapped. */
  mapped: number
  /** Bytes that were there already (touched before the prefetch came, or mapped by another resolver). */
  present: number
  /** Times the prefetch stepped aside because faults were waiting to be read. */
  yields: number
  /** It ended early: aborted, or the userfaultfd or the region was closed. */
  stopped: boolean
}

/** A fault handler: resolve the fault, synchronously or before the returned promise settles. */
export type FaultHandler = (fault: Fault) => void | Promise<void>

/** Options of {@link Userfaultfd.handle}. */
export interface HandleOptions {
  /** Keep this thread's event loop alive while the handler is installed. Default false. */
  keepAlive?: boolean
  /**
   * Read the userfaultfd on this thread, in place of the package's fault loop thread: a fault then
   * wakes this thread directly, one thread hand-off less (what a C handler does). This thread then
   * runs a loop that waits in the kernel for up to 50 ms at a time between turns of its event
   * loop, so use it on a thread that serves faults and little else: a handler worker (the default
   * there). If this thread stays away from its loop for 20 ms while messages wait (it touched
   * registered memory itself, or its handler blocks), the loop thread reads them for it: its own
   * fault gets the fallback, native sources and timeouts keep working. Ignored with
   * `EVENT_FORK`. Default false.
   */
  direct?: boolean
}

/** Options of {@link Userfaultfd.handleInWorker}: how the handler worker is started. */
export interface WorkerHandlerOptions {
  /** Passed to the worker as `workerData` of `node:worker_threads`. */
  workerData?: unknown
  /** Resource limits of the worker (`resourceLimits` of `node:worker_threads`). Default: none. */
  resourceLimits?: ResourceLimits
  /** Node options of the worker. Default: the parent's. */
  execArgv?: string[]
  /** The worker reads the userfaultfd itself ({@link HandleOptions.direct}). Default true. */
  direct?: boolean
}

/** What `uffd.share()` returns: post it to a worker and `Userfaultfd.attach` it there. */
export interface SharedUserfaultfd {
  /** Always `'userfaultfd.uffd'`: marks the token as a userfaultfd's. */
  readonly type: 'userfaultfd.uffd'
  /** The userfaultfd's id in this process's registry of live userfaultfds. */
  readonly id: number
}

/** Counters since the userfaultfd was opened. */
export interface UffdStats {
  /** Faults read from the kernel, by kind (a duplicate message for a page in flight counts too). */
  readonly faults: {
    /** Missing faults: a page that is not there. */
    readonly missing: number
    /** Minor faults: a page in the page cache, not mapped here. */
    readonly minor: number
    /** Write-protect faults: a write to a protected page. */
    readonly wp: number
  }
  /** Successful resolving ioctls, by kind. */
  readonly resolutions: {
    /** UFFDIO_COPY calls. */
    readonly copy: number
    /** UFFDIO_ZEROPAGE calls. */
    readonly zeropage: number
    /** UFFDIO_CONTINUE calls. */
    readonly continue: number
    /** UFFDIO_POISON calls. */
    readonly poison: number
    /** UFFDIO_WAKE calls. */
    readonly wake: number
    /** UFFDIO_WRITEPROTECT calls (protecting or unprotecting). */
    readonly writeProtect: number
    /** UFFDIO_MOVE calls. */
    readonly move: number
  }
  /** Non-cooperative events read (remove, unmap, remap, fork). */
  readonly events: number
  /** Resolves the kernel refused with EAGAIN behind an unread event, parked and retried. */
  readonly parked: number
  /** Resolves that found the page already mapped (another resolver won). */
  readonly eexist: number
  /** Messages for a page whose fault was already in flight, not dispatched again. */
  readonly duplicates: number
  /** Bytes mapped by COPY, ZEROPAGE, CONTINUE and MOVE. */
  readonly bytesMapped: number
  /** Batches handed to handlers. */
  readonly batches: number
  /** Messages read from the userfaultfd (faults and events). */
  readonly messages: number
  /** Faults resolved by the fallback. */
  readonly fallbacks: number
  /** Faults taken by the handler's own thread, resolved by the fallback (`ERR_UFFD_SELF_FAULT`). */
  readonly selfFaults: number
  /** Faults that waited longer than `timeoutMs`, resolved by the fallback (`ERR_UFFD_TIMEOUT`). */
  readonly timeouts: number
  /**
   * Troubles of the fault path, each also an `'error'` event: fallbacks (unresolved, timed out,
   * self-faults, handler gone), faults left asleep after `{ wake: false }`, failed fallbacks,
   * faults outside any region. A handler that throws after resolving its fault is an event only.
   */
  readonly errors: number
  /** Faults resolved by a native source on the loop thread, with no JavaScript. */
  readonly native: number
  /** Ranges of a file source that were holes (sparse files), mapped as zeros without a read. */
  readonly holes: number
  /** Faults handed over and not yet resolved (a gauge, not a counter). */
  readonly inFlight: number
  /** Faults waiting for a handler to be installed (a gauge, not a counter). */
  readonly queued: number
}

/** A range the kernel reported in a non-cooperative event. */
export interface RangeEvent {
  /** The region the range lies in, when it is one of this process's regions. */
  readonly region: Region | undefined
  /** Offset of the range in the region, when the region is known. */
  readonly offset: number | undefined
  /** Length of the range in bytes. */
  readonly length: number
  /** The range's start address. */
  readonly start: bigint
  /** The range's end address (exclusive). */
  readonly end: bigint
}

/** An `mremap` of registered memory. */
export interface RemapEvent extends RangeEvent {
  /** The new start address. */
  readonly to: bigint
  /**
   * The range at its new place, which the kernel keeps registered: a `'remote'` region whose
   * faults reach the handler (its offset 0 is the old range's `start`; a native source of the old
   * range does not follow it). Undefined if the range was not registered here.
   */
  readonly moved: Region | undefined
}

/** A fork of the process with registered memory (EVENT_FORK). */
export interface ForkEvent {
  /** The child's userfaultfd, or undefined where only the parent's thread saw the fork (a handler worker forwards none). */
  readonly child: Userfaultfd | undefined
  /** The child's copy of the registered memory, as `'remote'` regions (empty when `child` is undefined). */
  readonly regions: readonly Region[]
}

/** Events of a userfaultfd. The non-cooperative ones need their feature (`EVENT_REMOVE`...). */
export interface UserfaultfdEvents {
  /** The userfaultfd closed: by `close()`, or by itself when the peer whose memory it served hung up. */
  close: []
  /** Trouble in the fault path (an `ERR_UFFD_*` code); with no listener it becomes a process warning. */
  error: [UffdError]
  /** `madvise(MADV_DONTNEED/MADV_REMOVE)` dropped pages; touching them again is a missing fault. */
  remove: [RangeEvent]
  /** The range was unmapped: it is no longer registered. */
  unmap: [RangeEvent]
  /** The range moved (`mremap`); its registration went with the old address. */
  remap: [RemapEvent]
  /**
   * The process forked: `child` serves the child's copy of the registered memory (at the same
   * addresses, as remote regions), already with this userfaultfd's handler. Close it when the child
   * is done with that memory (a spawned program has replaced it at once); closing this userfaultfd
   * closes it too.
   */
  fork: [ForkEvent]
}

const workerHost = join(__dirname, 'worker-host.js')

/** An event as the handler worker forwards it: the range, and the region by id. */
type ForwardedEvent = Omit<JsEvent, 'kind' | 'child'>
const DEFAULT_TIMEOUT_MS = 30_000
/** How long a direct reader waits in the kernel before its event loop gets a turn. */
const DIRECT_WAIT_MS = 50
/** Faults taken into JavaScript at a time (more wait for the next take). */
const FAULTS_PER_TAKE = 256
const NO_OTHERS: JsDispatch[] = []
/** A native handle made elsewhere in the package, and whether this thread owns it (an adoption) or only attached to it. */
let adopting: { handle: NativeUffd; owner: boolean } | undefined
let closesOnExit = false
let warnedUserModeOnly = false

/**
 * On the main thread's way out (the end of the script, `process.exit()`), every userfaultfd of
 * the process is closed: closing wakes every thread asleep in a fault, so no worker being stopped
 * waits for a handler that will not come.
 */
function closeAllOnExit(): void {
  if (closesOnExit || !isMainThread) return
  closesOnExit = true
  process.once('exit', () => native.closeAllUserfaultfds())
}

/** The warning for a userfaultfd that fell back to user-mode faults without being asked to. */
function warnUserModeOnly(): void {
  if (warnedUserModeOnly) return
  warnedUserModeOnly = true
  process.emitWarning(
    'userfaultfd is not permitted for kernel-mode faults here, so it was opened for user-mode faults only: a system call ' +
      'that touches a missing page of registered memory (read(2) into it, write(2) or send(2) from it, fs.readSync into a ' +
      'region buffer...) fails with EFAULT instead of faulting. Pass { userModeOnly: true } to say that is what you want, ' +
      'or give this user access to /dev/userfaultfd, set sysctl vm.unprivileged_userfaultfd=1, or grant CAP_SYS_PTRACE.',
    { type: 'UffdWarning', code: 'UFFD_USER_MODE_ONLY' },
  )
}

/** The Region of an id an event names, if it is still open. */
function regionOrNothing(id: number | undefined): Region | undefined {
  if (id === undefined) return undefined
  try {
    return Region.fromId(id)
  } catch {
    return undefined
  }
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | undefined)?.then === 'function'
}

function moduleSpecifier(module: string | URL): string {
  if (module instanceof URL) return module.href
  if (typeof module !== 'string') throw argumentError('module', 'a string or a URL', module)
  if (module.startsWith('file:') || module.startsWith('data:')) return module
  if (isAbsolute(module) || module.startsWith('.')) return pathToFileURL(resolvePath(module)).href
  return module
}

/**
 * A userfaultfd: register regions with it, install a handler, and resolve the faults the handler
 * receives. The fault loop runs on a native thread; faults reach the handler in batches.
 *
 * A thread that touches registered memory sleeps in the kernel until its fault is resolved, so the
 * handler must run on another thread: `handle()` serves faults taken by other threads (workers),
 * `handleInWorker()` serves this thread's own reads from a worker the package starts.
 *
 * @example
 * ```ts
 * const uffd = new Userfaultfd()
 * const region = Region.anonymous(1 << 30)
 * uffd.register(region)
 * await uffd.handleInWorker(new URL('./pager.js', import.meta.url))
 * new Uint8Array(region.buffer)[12345] // served by pager.js
 * ```
 */
export class Userfaultfd extends EventEmitter<UserfaultfdEvents> {
  readonly #native: NativeUffd
  readonly #features: ReadonlySet<FeatureName>
  #worker: Worker | undefined
  #closed = false
  /** Promises of async handlers not settled yet (a direct reader then yields to the event loop often). */
  #pending = 0
  /** Where batches arrive, reused: [faults, others, then FAULT_FIELDS numbers per fault]. */
  readonly #packed = new Float64Array(2 + FAULTS_PER_TAKE * FAULT_FIELDS)
  readonly #children = new Set<Userfaultfd>()
  /** The id of the fd in this process, which the per-fault calls name it by. */
  readonly #id: number
  /** Handler workers being started by `handleInWorker` (the current one stays until one is ready). */
  readonly #starting = new Set<Worker>()
  /** Keeps this thread's event loop alive while the userfaultfd is open (`ref()`). */
  #keeper: ReturnType<typeof setInterval> | undefined

  /** Opens a userfaultfd (non-blocking), negotiates features and starts its fault loop. */
  constructor(options?: UserfaultfdOptions) {
    super()
    let owner = true
    if (adopting) {
      this.#native = adopting.handle
      owner = adopting.owner
      adopting = undefined
    } else {
      const { features, userModeOnly, fallback, timeoutMs, spinMicros } = optionsOf('options', options)
      if (features !== undefined && !Array.isArray(features)) throw argumentError('options.features', 'an array of feature names', features)
      const timeout = optionalInteger('options.timeoutMs', timeoutMs) ?? DEFAULT_TIMEOUT_MS
      this.#native = call(
        () =>
          new native.NativeUffd({
            features: features?.map(String),
            userModeOnly: userModeOnly === undefined ? undefined : optionalBoolean('options.userModeOnly', userModeOnly, false),
            fallback,
            timeoutMs: timeout === 0 ? undefined : timeout,
            spinMicros: optionalInteger('options.spinMicros', spinMicros),
          }),
      )
      if (userModeOnly === undefined && this.#native.userModeOnly) warnUserModeOnly()
    }
    this.#features = new Set(this.#native.features as FeatureName[])
    this.#id = this.#native.id
    if (owner) {
      // The owner hears what no handler hears: faults with no handler, timeouts, a peer gone.
      // Held weakly: a userfaultfd dropped without close() must still be collected (and closed).
      const self = new WeakRef(this)
      this.#native.observe(() => {
        const uffd = self.deref()
        if (uffd) uffd.#onNotices()
      })
      closeAllOnExit()
    }
  }

  /** What the kernel offers (features and ioctls), asked on a throwaway fd. */
  static probe(): ProbeResult {
    return call(() => native.NativeUffd.probe()) as ProbeResult
  }

  /** A handle, in this thread, on a userfaultfd shared with `uffd.share()`. It does not own the fd. */
  static attach(shared: SharedUserfaultfd): Userfaultfd {
    if (typeof shared !== 'object' || shared === null || shared.type !== 'userfaultfd.uffd') {
      throw argumentError('shared', 'the result of uffd.share()', shared)
    }
    const id = integer('shared.id', shared.id)
    return Userfaultfd.fromNative(
      call(() => native.NativeUffd.attach(id)),
      false,
    )
  }

  /**
   * Serves a userfaultfd that another process created and registered (a VM monitor, a restored
   * process), which this process holds as `fd`: `ranges` are the ranges of that process's memory it
   * registered. Faults there resolve with `copy`/`zero` like local ones; the regions have no buffer.
   */
  static fromFd(fd: number, options: AdoptOptions & { ranges: RemoteRange[] }): Adoption {
    return adoptFd(fd, options)
  }

  /** @internal A Userfaultfd over a native handle made elsewhere in the package: an adoption it owns, or an attached handle. */
  static fromNative(handle: NativeUffd, owner = true): Userfaultfd {
    adopting = { handle, owner }
    return new Userfaultfd()
  }

  /**
   * Keeps this thread's event loop alive until `close()` (or `unref()`), as Node's handles do. An
   * adopted userfaultfd whose peer is connected (from {@link listen} or {@link receive}) is ref'd
   * from the start, so a process that serves another one's memory stays up while the peer does.
   */
  ref(): this {
    if (!this.#closed && this.#keeper === undefined) this.#keeper = setInterval(() => {}, 2 ** 30)
    return this
  }

  /** Lets this thread's event loop end while the userfaultfd is open (the default for one you open). */
  unref(): this {
    if (this.#keeper !== undefined) clearInterval(this.#keeper)
    this.#keeper = undefined
    return this
  }

  /** The features negotiated with the kernel. */
  get features(): ReadonlySet<FeatureName> {
    return this.#features
  }
  /** Whether only user-mode faults are handled (kernel-mode accesses get EFAULT instead). */
  get userModeOnly(): boolean {
    return this.#native.userModeOnly
  }
  /**
   * Whether the userfaultfd is closed: by the owner's `close()`, or by itself when the peer of an
   * adoption hung up. Calls on a closed userfaultfd throw EBADF.
   */
  get closed(): boolean {
    return this.#native.closed
  }

  /** A token to post to a worker thread, where `Userfaultfd.attach(token)` gives a handle. */
  share(): SharedUserfaultfd {
    return { type: 'userfaultfd.uffd', id: this.#id }
  }

  /** Registers a region (or a page-aligned part of it) for missing, minor and/or wp faults. */
  register(region: Region, options?: RegisterOptions): Registration {
    const { missing, minor, wp, offset, length, source, readahead, fallthrough } = optionsOf('options', options)
    // A page-cache source serves minor faults: it implies `minor` unless told otherwise.
    const wantsMinor = optionalBoolean('options.minor', minor, source instanceof Source && source.kind === 'pageCache')
    const wantsWp = optionalBoolean('options.wp', wp, false)
    const wantsMissing = optionalBoolean('options.missing', missing, !wantsMinor && !wantsWp)
    const at = optionalInteger('options.offset', offset) ?? 0
    const len = optionalInteger('options.length', length)
    const handle = nativeOf(region)
    if (source !== undefined && !(source instanceof Source)) throw argumentError('options.source', 'a Source', source)
    const ahead = optionsOf('options.readahead', readahead)
    const range = {
      missing: wantsMissing,
      minor: wantsMinor,
      wp: wantsWp,
      offset: at,
      length: len,
      readaheadPages: optionalInteger('options.readahead.pages', ahead.pages),
      readaheadMaxPages: optionalInteger('options.readahead.maxPages', ahead.maxPages),
      adaptive: optionalBoolean('options.readahead.adaptive', ahead.adaptive, false),
      fallthrough: optionalBoolean('options.fallthrough', fallthrough, false),
    }
    const ioctls = call(() => this.#native.register(handle, range, source?.native))
    return { ioctls: new Set(ioctls as IoctlName[]) }
  }

  /**
   * Serves a range that is registered already (another process's memory: an adopted region) from a
   * native source, on the loop thread, with no JavaScript per fault; no ioctl.
   *
   * @example
   * ```ts
   * const { uffd, regions, offsets } = await listener.accept()
   * regions.forEach((region, i) => uffd.serve(region, { source: Source.file('vm.mem', { offset: offsets[i] }), readahead: { pages: 16, adaptive: true } }))
   * ```
   */
  serve(region: Region, options: ServeOptions): void {
    const { source, readahead, fallthrough, afterRemove, trace, offset, length } = optionsOf('options', options)
    if (!(source instanceof Source)) throw argumentError('options.source', 'a Source', source)
    if (trace !== undefined && !(trace instanceof TraceRecorder)) throw argumentError('options.trace', 'a TraceRecorder', trace)
    const removed = afterRemove ?? (region.kind === 'remote' ? 'zeros' : 'source')
    if (removed !== 'zeros' && removed !== 'source') throw argumentError('options.afterRemove', "'zeros' or 'source'", afterRemove)
    const ahead = optionsOf('options.readahead', readahead)
    const handle = nativeOf(region)
    const how = {
      offset: optionalInteger('options.offset', offset) ?? 0,
      length: optionalInteger('options.length', length),
      readaheadPages: optionalInteger('options.readahead.pages', ahead.pages),
      readaheadMaxPages: optionalInteger('options.readahead.maxPages', ahead.maxPages),
      adaptive: optionalBoolean('options.readahead.adaptive', ahead.adaptive, false),
      fallthrough: optionalBoolean('options.fallthrough', fallthrough, false),
      zeroRemoved: removed === 'zeros',
    }
    call(() => this.#native.serve(handle, how, source.native, trace?.native))
  }

  /** Native sources' fault latency (p50, p99) and when the first fault came. */
  latency(): LatencyReport {
    const { count, p50Micros, p99Micros, firstFaultMs } = this.#native.latency()
    return { count, p50Micros, p99Micros, firstFaultMs: firstFaultMs ?? undefined }
  }

  /** Unregisters a region or part of it; threads waiting there are woken and fault normally. */
  unregister(region: Region, options?: RangeOptions): void {
    const { offset, length } = optionsOf('options', options)
    const at = optionalInteger('options.offset', offset) ?? 0
    const len = optionalInteger('options.length', length)
    const handle = nativeOf(region)
    call(() => this.#native.unregister(handle, at, len))
  }

  /** UFFDIO_COPY of `bytes` (a multiple of the page size) to `offset`; returns the bytes mapped. */
  copy(region: Region, offset: number, bytes: ArrayBufferView | ArrayBuffer, options?: MapOption): number {
    const data = bytesOf('bytes', bytes)
    const wake = wakeOf(options)
    const protect = protectOf(options)
    const handle = nativeOf(region)
    return call(() => this.#native.copy(handle, integer('offset', offset), data, wake, protect))
  }

  /** UFFDIO_ZEROPAGE over a range (not hugetlbfs); returns the bytes mapped. */
  zero(region: Region, offset: number, length: number, options?: WakeOption): number {
    const handle = nativeOf(region)
    return call(() => this.#native.zero(handle, integer('offset', offset), integer('length', length), wakeOf(options)))
  }

  /** UFFDIO_CONTINUE over a range: maps pages already in the page cache; returns the bytes mapped. */
  continue(region: Region, offset: number, length: number, options?: MapOption): number {
    const handle = nativeOf(region)
    const protect = protectOf(options)
    return call(() => this.#native.continue(handle, integer('offset', offset), integer('length', length), wakeOf(options), protect))
  }

  /**
   * Write-protects a range registered with `wp: true`, or lifts the protection (waking writers
   * waiting there unless `{ wake: false }`). A write to a protected page is a `'wp'` fault.
   */
  writeProtect(region: Region, offset: number, length: number, protect: boolean, options?: WakeOption): void {
    const handle = nativeOf(region)
    if (typeof protect !== 'boolean') throw argumentError('protect', 'a boolean', protect)
    call(() => this.#native.writeProtect(handle, integer('offset', offset), integer('length', length), protect, wakeOf(options)))
  }

  /**
   * UFFDIO_MOVE (Linux 6.8): moves `length` bytes of pages from `fromOffset` of `from` to `offset`
   * of `region` without copying; the source becomes empty. Both regions are anonymous, `region`
   * is registered. Returns the bytes moved.
   */
  move(region: Region, offset: number, from: Region, fromOffset: number, length: number, options?: MoveOption): number {
    const handle = nativeOf(region)
    const source = nativeRegionOf(from, 'from')
    const { allowSourceHoles } = optionsOf('options', options)
    const how = {
      fromOffset: integer('fromOffset', fromOffset),
      length: integer('length', length),
      wake: wakeOf(options),
      allowSourceHoles: optionalBoolean('options.allowSourceHoles', allowSourceHoles, false),
    }
    return call(() => this.#native.move(handle, integer('offset', offset), source, how))
  }

  /**
   * Offsets of the pages of `region` written since they were last protected, without a fault per
   * write: open the userfaultfd with `features: ['WP_ASYNC']`, register the region with `wp: true`,
   * protect it with `writeProtect`, and the kernel lifts each page's protection itself on its first
   * write. With `{ clear: true }` the reported pages are protected again.
   */
  dirtyPages(region: Region, options?: DirtyOptions): number[] {
    const handle = nativeOf(region)
    const { clear, method = 'auto' } = optionsOf('options', options)
    if (!['auto', 'scan', 'pagemap'].includes(method)) throw argumentError('options.method', "'auto', 'scan' or 'pagemap'", method)
    return call(() => this.#native.dirtyPages(handle, optionalBoolean('options.clear', clear, false), method))
  }

  /**
   * Maps the pages of `ranges` (default: the whole region) that are not there yet, from
   * `options.source` or the source each range was registered with (up to a `fallthrough`
   * source's end), in the background: on a thread of libuv's pool (it holds one until done), in
   * chunks, stepping aside whenever faults are waiting so that a thread touching the memory is
   * served first. Pages that are already there are skipped. Rejects with a UffdError
   * (EINVAL for a range that is not registered or has no source; the ioctl's errno otherwise).
   *
   * @example
   * ```ts
   * uffd.register(region, { source: Source.file('snapshot.bin') })
   * void uffd.prefetch(region) // the rest arrives in the background; touched pages come first
   * ```
   */
  prefetch(region: Region, ranges?: ByteRange[], options?: PrefetchOptions): Promise<PrefetchResult> {
    const handle = nativeOf(region)
    const { source, chunkPages, signal } = optionsOf('options', options)
    if (source !== undefined && !(source instanceof Source)) throw argumentError('options.source', 'a Source', source)
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw argumentError('options.signal', 'an AbortSignal', signal)
    if (ranges !== undefined && !Array.isArray(ranges)) throw argumentError('ranges', 'an array of { offset, length }', ranges)
    const list = (ranges ?? [{ offset: 0, length: region.size }]).map((range, i) => {
      const { offset, length } = optionsOf(`ranges[${i}]`, range)
      return { offset: integer(`ranges[${i}].offset`, offset), length: integer(`ranges[${i}].length`, length) }
    })
    const chunk = optionalInteger('options.chunkPages', chunkPages)
    const job = call(() => this.#native.prefetch(handle, list, source?.native, chunk))
    if (signal?.aborted) job.cancel()
    const onAbort = () => job.cancel()
    signal?.addEventListener('abort', onAbort, { once: true })
    return job.start().then((outcome) => {
      signal?.removeEventListener('abort', onAbort)
      if (outcome.error) throw fromFailure(outcome.error)
      return { mapped: outcome.mapped, present: outcome.present, yields: outcome.yields, stopped: outcome.stopped }
    })
  }

  /** UFFDIO_POISON over a range: a later access raises SIGBUS. Returns the bytes poisoned. */
  poison(region: Region, offset: number, length: number, options?: WakeOption): number {
    const handle = nativeOf(region)
    return call(() => this.#native.poison(handle, integer('offset', offset), integer('length', length), wakeOf(options)))
  }

  /** UFFDIO_WAKE over a range, after resolves with `{ wake: false }`. */
  wake(region: Region, offset: number, length: number): void {
    const handle = nativeOf(region)
    call(() => this.#native.wake(handle, integer('offset', offset), integer('length', length)))
  }

  /**
   * Serves faults with `handler` on this thread. Faults taken by this thread itself cannot be served
   * here (the thread is asleep in the kernel): they get the fallback and an `'error'` event
   * (`ERR_UFFD_SELF_FAULT`). Use `handleInWorker` to serve this thread's reads.
   */
  handle(handler: FaultHandler, options?: HandleOptions): this {
    if (typeof handler !== 'function') throw argumentError('handler', 'a function', handler)
    const { keepAlive, direct } = optionsOf('options', options)
    const alive = optionalBoolean('options.keepAlive', keepAlive, false)
    const reads = optionalBoolean('options.direct', direct, false)
    call(() => this.#native.handle(() => this.#takeBatches(handler), alive))
    const generation = reads ? call(() => this.#native.startDirect()) : 0
    if (generation !== 0) void this.#readDirectly(handler, generation, alive)
    return this
  }

  /** Notices the owner's thread hears: faults with no handler, timeouts, a peer that hung up. */
  #onNotices(): void {
    for (const item of this.#native.takeNotices()) {
      if (!item.notice) continue
      // Said when the fault came; a handler installed since (right after accept(), say) has it now.
      const notice = item.notice
      if (notice.kind === 'no-handler' && (this.#native.hasHandler || (notice.fault && !this.#native.faultWaiting(notice.fault.id))))
        continue
      this.#report(fromNotice(item.notice))
      if (item.notice.kind === 'peer-gone') this.#closedByPeer()
    }
  }

  /** What the fault loop handed to this thread's handler, taken into the reused `#packed`. */
  #takeBatches(handler: FaultHandler): void {
    for (;;) {
      native.takeFaults(this.#id, this.#packed)
      if (!this.#onPacked(handler)) return
    }
  }

  /** Handles the batch in `#packed`; false if it was empty. */
  #onPacked(handler: FaultHandler): boolean {
    const packed = this.#packed
    const faults = packed[0] as number
    const others = packed[1] ? native.takeOthers(this.#id) : NO_OTHERS
    if (faults === 0 && others.length === 0) return false
    this.#onBatch(packed, 2, 2 + faults * FAULT_FIELDS, others, handler)
    return true
  }

  /**
   * The loop of a handler that reads the fd itself: a turn of the fault loop, then of the event
   * loop. It ends when the fd closes or another handler replaces this one; whatever ends it, the
   * loop thread reads again.
   */
  async #readDirectly(handler: FaultHandler, generation: number, keepAlive: boolean): Promise<void> {
    // The reader's turns never keep the thread alive on their own: `keepAlive` (or other work) does.
    const immediate = () =>
      new Promise<void>((resolve) => {
        const next = setImmediate(resolve)
        if (!keepAlive) next.unref()
      })
    try {
      for (let turn = 1; ; turn++) {
        const wait = this.#pending > 0 ? 1 : DIRECT_WAIT_MS
        if (!native.pullFaults(this.#id, generation, wait, this.#packed)) return
        const idle = !this.#onPacked(handler)
        // The event loop runs between turns: always when idle or when async handlers wait for it.
        if (idle || this.#pending > 0 || turn % 64 === 0) await immediate()
      }
    } catch (error) {
      // A failed read, or a listener that threw: report it; the loop thread takes over below.
      this.#report(error instanceof UffdError ? error : (fromNative(error) as UffdError))
    } finally {
      this.#native.stopDirect(generation)
    }
  }

  /**
   * Serves faults with the default export of `module`, run in a worker thread that the package
   * starts and owns, so that this thread may read the registered memory. Resolves once the
   * handler is installed; faults taken before then wait for it.
   */
  handleInWorker(module: string | URL, options?: WorkerHandlerOptions): Promise<void> {
    const spec = moduleSpecifier(module)
    const { workerData, resourceLimits, execArgv, direct } = optionsOf('options', options)
    const reads = optionalBoolean('options.direct', direct, true)
    if (this.#closed) return Promise.reject(call(() => this.#native.handle(() => {}, false)))
    // Faults wait for this handler without a notice until it is ready or has failed (the worker
    // ends the expectation itself if it fails while this thread sleeps in a fault).
    const expectation = this.#native.expectHandler()
    const worker = new Worker(workerHost, {
      argv: [String(this.#id), spec, reads ? 'direct' : 'callback', String(expectation)],
      workerData,
      ...(resourceLimits ? { resourceLimits } : {}),
      ...(execArgv ? { execArgv } : {}),
    })
    this.#starting.add(worker)
    const promise = new Promise<void>((resolve, reject) => {
      let ready = false
      const settle = () => {
        this.#starting.delete(worker)
        this.#native.unexpectHandler(expectation)
      }
      const fail = (error: UffdError) => {
        settle()
        void worker.terminate()
        reject(error)
      }
      worker.on('message', (message: WorkerMessage) => {
        if (message.type === 'event' && message.event) {
          this.#onEvent({ ...message.event, kind: String(message.name), child: undefined })
        } else if (message.type === 'ready') {
          ready = true
          settle()
          // Serving faults never keeps the process alive on its own (awaiting the start did).
          worker.unref()
          // The new handler serves already: the one it replaces goes only now.
          const replaced = this.#worker
          this.#worker = worker
          void replaced?.terminate()
          if (this.#closed) void worker.terminate()
          resolve()
        } else if (message.type === 'error' && message.error) {
          this.#report(UffdError.fromJSON(message.error))
        } else if (message.type === 'failed' && message.error) {
          fail(UffdError.fromJSON(message.error))
        }
      })
      worker.on('error', (cause) => {
        const error = new UffdError(`the handler worker for ${spec} failed: ${cause.message}`, { code: 'ERR_UFFD_WORKER', cause })
        if (ready) this.#report(error)
        else fail(error)
      })
      worker.on('exit', (code) => {
        if (!ready) {
          fail(new UffdError(`the handler worker for ${spec} exited with code ${code} before it was ready`, { code: 'ERR_UFFD_WORKER' }))
          return
        }
        // A worker that was replaced or closed went on purpose; only the serving one's exit is news,
        // and only if no handler serves now (a replacement may have installed its own already).
        if (this.#worker !== worker) return
        this.#worker = undefined
        if (!this.#closed && !this.#native.hasHandler) {
          this.#report(
            new UffdError(`the handler worker for ${spec} exited with code ${code}: faults now wait for a new handler`, {
              code: 'ERR_UFFD_HANDLER_GONE',
            }),
          )
        }
      })
    })
    return promise
  }

  /** A batch: the faults packed in `faults[from, to)`, then the events and notices. */
  #onBatch(faults: Float64Array, from: number, to: number, others: JsDispatch[], handler: FaultHandler): void {
    // Events come first: the kernel may already have changed what the faults after them refer to.
    for (const item of others) if (item.event) this.#onEvent(item.event, handler)
    for (let at = from; at < to; at += FAULT_FIELDS) this.#dispatch(faults, at, handler)
    for (const item of others) {
      if (!item.notice) continue
      this.#report(fromNotice(item.notice))
      if (item.notice.kind === 'peer-gone') this.#closedByPeer()
    }
  }

  #onEvent(raw: JsEvent, handler?: FaultHandler): void {
    const region = regionOrNothing(raw.regionId)
    const range = { region, offset: raw.offset, length: raw.length ?? 0, start: raw.start ?? 0n, end: raw.end ?? 0n }
    if (raw.kind === 'remap') this.emit('remap', { ...range, to: raw.to ?? 0n, moved: regionOrNothing(raw.movedId) })
    else if (raw.kind === 'remove' || raw.kind === 'unmap') this.emit(raw.kind, range)
    else if (raw.kind === 'fork') this.#onFork(raw.child, handler)
  }

  #onFork(adoption: NativeAdoption | undefined, handler: FaultHandler | undefined): void {
    if (!adoption) {
      this.emit('fork', { child: undefined, regions: [] })
      return
    }
    const { uffd: child, regions } = fromAdoption(adoption)
    this.#children.add(child)
    if (handler) child.handle(handler)
    child.on('error', (error) => this.#report(error))
    this.emit('fork', { child, regions })
  }

  #dispatch(packed: Float64Array, at: number, handler: FaultHandler): void {
    let fault: Fault
    try {
      fault = Fault.fromBatch(this.#native, this.#id, Region.fromId(packed[at + 1] as number), packed, at)
    } catch {
      // The region was closed in the meantime: its waiters were woken when it was.
      return
    }
    let result: unknown
    try {
      result = handler(fault)
    } catch (error) {
      this.#finish(fault, error)
      return
    }
    if (isPromiseLike(result)) {
      this.#pending++
      result.then(
        () => {
          this.#pending--
          this.#finish(fault, undefined)
        },
        (error: unknown) => {
          this.#pending--
          this.#finish(fault, error ?? new Error('the handler rejected'))
        },
      )
    } else {
      this.#finish(fault, undefined)
    }
  }

  #finish(fault: Fault, error: unknown): void {
    let outcome: ReturnType<Fault['finish']>
    try {
      outcome = fault.finish()
    } catch (finishError) {
      this.#report(
        finishError instanceof UffdError ? finishError : new UffdError(String(finishError), { code: 'ERR_UFFD_LOOP', cause: finishError }),
      )
      return
    }
    // The common case, on every fault's path: nothing to say.
    if (error === undefined && outcome === 'done') return
    const info = { regionId: fault.region.id, offset: fault.offset, address: fault.address, kind: fault.kind, threadId: fault.threadId }
    const where = `a ${fault.kind} fault at offset ${fault.offset} of region ${fault.region.id}`
    if (error !== undefined) {
      const what = outcome === 'fell-back' ? 'it was resolved by the fallback' : 'the fault had been resolved'
      this.#report(
        new UffdError(`the handler threw while serving ${where}: ${what}`, { code: 'ERR_UFFD_HANDLER_THREW', fault: info, cause: error }),
      )
    } else if (outcome === 'fell-back') {
      this.#report(
        new UffdError(`the handler returned without resolving ${where}: it was resolved by the fallback`, {
          code: 'ERR_UFFD_UNRESOLVED',
          fault: info,
        }),
      )
    }
  }

  #closedByPeer(): void {
    if (this.#closed) return
    this.close()
  }

  /**
   * Emits an 'error' event, or a process warning if nobody listens (an unheard 'error' would
   * crash); the warning's text carries the cause's, which a printed warning would not show.
   */
  #report(error: UffdError): void {
    if (this.listenerCount('error') > 0) this.emit('error', error)
    else process.emitWarning(withCauseInMessage(error))
  }

  /** Counters of faults, resolutions and fallbacks. */
  get stats(): UffdStats {
    return statsOf(this.#native.stats())
  }

  /**
   * Stops the fault loop and closes the fd: every waiting thread is woken and faults normally
   * from then on; the handler worker, if any, is terminated. A handle from `attach` only stops its
   * handler.
   */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    for (const child of this.#children) child.close()
    this.#children.clear()
    this.unref()
    this.#native.close()
    void this.#worker?.terminate()
    this.#worker = undefined
    for (const worker of this.#starting) void worker.terminate()
    this.#starting.clear()
    this.emit('close')
  }

  /** Calls `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close()
  }
}

/** What a handler worker posts to the thread that started it. */
interface WorkerMessage {
  type: 'ready' | 'error' | 'failed' | 'event'
  error?: Record<string, unknown>
  name?: string
  event?: ForwardedEvent
}

/** The same error, its message followed by its cause's (a printed warning shows no cause). */
function withCauseInMessage(error: UffdError): UffdError {
  const cause = error.cause
  if (cause === undefined) return error
  const text = cause instanceof Error ? cause.message : String((cause as { message?: unknown })?.message ?? cause)
  const copy = new UffdError(`${error.message} (cause: ${text})`, {
    code: error.code,
    errno: error.errno,
    syscall: error.syscall,
    fault: error.fault,
    cause,
  })
  if (error.stack) copy.stack = error.stack.replace(error.message, copy.message)
  return copy
}

function nativeOf(region: Region) {
  return nativeRegionOf(region)
}

function protectOf(options: MapOption | undefined): boolean {
  return optionalBoolean('options.writeProtect', optionsOf('options', options).writeProtect, false)
}

function wakeOf(options: WakeOption | undefined): boolean {
  return optionalBoolean('options.wake', optionsOf('options', options).wake, true)
}

function statsOf(s: NativeStats): UffdStats {
  return {
    faults: { missing: s.faultsMissing, minor: s.faultsMinor, wp: s.faultsWp },
    resolutions: {
      copy: s.copies,
      zeropage: s.zeropages,
      continue: s.continues,
      poison: s.poisons,
      wake: s.wakes,
      writeProtect: s.writeProtects,
      move: s.moves,
    },
    events: s.events,
    parked: s.parked,
    native: s.native,
    holes: s.holes,
    eexist: s.eexist,
    duplicates: s.duplicates,
    bytesMapped: s.bytesMapped,
    batches: s.batches,
    messages: s.messages,
    fallbacks: s.fallbacks,
    selfFaults: s.selfFaults,
    timeouts: s.timeouts,
    errors: s.errors,
    inFlight: s.inFlight,
    queued: s.queued,
  }
}
