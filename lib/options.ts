// Every option the package takes, the one table of their defaults, and the functions that turn a
// caller's options into the complete values the binding gets: the binding decides no default that
// TypeScript can decide (the shape of rolldown's bindingify-input-options.ts).
import type { ResourceLimits } from 'node:worker_threads'
import type { BindingOptions, BindingRange, BindingRegion, BindingRegistration, BindingRemoteRange, BindingServe } from './binding'
import { argumentError, rangeError } from './errors'
import type { FeatureName } from './features'
import { bindingRegionOf, type Region } from './region'
import { Source } from './source'
import { TraceRecorder } from './trace'
import { integer, optionalBoolean, optionalInteger, optionalSignal, options as optionsOf } from './validate'

/** The defaults of every option, and the fixed sizes of the fault path. */
export const DEFAULTS = Object.freeze({
  /** How a fault is resolved when its handler cannot: zeros for a userfaultfd you open... */
  fallback: 'zero',
  /** ...SIGBUS for an adopted one: another process's memory never gets zeros it did not have. */
  adoptionFallback: 'sigbus',
  /** How long a fault may wait for its handler (0: no limit). */
  timeoutMs: 30_000,
  /** Microseconds a reader polls before it sleeps. */
  spinMicros: 0,
  /** Loop threads that read the fd and serve native sources. */
  readers: 1,
  /** A resolve wakes the faulting thread; `false` is `*_MODE_DONTWAKE`. */
  wake: true,
  /** A resolve maps the pages writable. */
  writeProtect: false,
  /** UFFDIO_MOVE fails with ENOENT on a source page that is not populated. */
  allowSourceHoles: false,
  /** Pages a native source maps per fault. */
  readaheadPages: 1,
  /** The largest adaptive window, in multiples of `readahead.pages`. */
  readaheadMaxFactor: 64,
  /** Pages per prefetch ioctl: base pages, and huge pages. */
  prefetchChunkPages: 64,
  prefetchChunkHugePages: 1,
  /** `handle()`: the handler does not keep its thread alive, and the loop thread reads the fd. */
  keepAlive: false,
  direct: false,
  /** `handleInWorker()`: the worker reads the fd itself. */
  workerDirect: true,
  /** Handler workers `handleInWorker` starts. */
  workers: 1,
  /** `serveFirecracker()`: how long a connection may take to send its handshake. */
  firecrackerHandshakeTimeoutMs: 5000,
  /** How long a direct reader waits in the kernel before its event loop gets a turn. */
  directWaitMs: 50,
  /** A direct reader yields to its event loop at least every this many turns. */
  directTurnsPerYield: 64,
  /** Faults a batch holds (more wait for the next batch). */
  faultsPerBatch: 256,
} as const)

/** Options of `new Userfaultfd()`: the features to negotiate, the permission, and the fallback. */
export interface UserfaultfdOptions {
  /**
   * Features that must be enabled (the call throws EOPNOTSUPP if the kernel lacks one). Whatever
   * else the kernel offers and changes nothing by being on (THREAD_ID, MISSING_SHMEM, MINOR_*,
   * EXACT_ADDRESS, WP_*, POISON, MOVE) is enabled anyway; events, SIGBUS and WP_ASYNC only on request.
   */
  features?: readonly FeatureName[] | ReadonlySet<FeatureName>
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
  /**
   * Threads that read the fd and serve native sources, 1 to 64 (default 1). With several, faults
   * of many threads are served on as many cores at once; events are still applied before any
   * fault read after them, and each page is served once. A JavaScript handler may then hear an
   * event after a fault another reader read after it. With `EVENT_FORK` one thread reads.
   */
  readers?: number
}

/**
 * Options of an adoption ({@link adoptFd}, {@link listen}, {@link receive}): as for a new
 * {@link Userfaultfd}, without `userModeOnly`. The default `fallback` is `'sigbus'`: another
 * process's memory never gets zeros it did not have; its faulting thread gets SIGBUS instead (a VM
 * monitor reports it and stops).
 */
export interface AdoptOptions extends Omit<UserfaultfdOptions, 'userModeOnly'> {
  /** The features the other process negotiated, as far as it said (default none). */
  features?: NonNullable<UserfaultfdOptions['features']>
}

/** A registered range of the other process's memory. */
export interface RemoteRange {
  /** Start address in the other process. */
  address: bigint | number
  /** Length in bytes, a multiple of `pageSize`. */
  length: number
  /** 4096, or the huge page size. */
  pageSize: number
}

/** Options of {@link adoptFd} and `Userfaultfd.fromFd`: an adoption's, and the ranges the other process registered. */
export interface AdoptFdOptions extends AdoptOptions {
  /** The ranges of the other process's memory registered with the userfaultfd. */
  ranges: RemoteRange[]
}

/** Options of {@link receive}: an adoption's, and a signal that stops waiting for the handshake. */
export interface ReceiveOptions extends AdoptOptions {
  /** Aborting rejects the call with an `AbortError` (`code: 'ABORT_ERR'`). */
  signal?: AbortSignal
}

/** Options of {@link HandshakeListener.accept}. */
export interface AcceptOptions {
  /**
   * Aborting rejects the call with an `AbortError` (`code: 'ABORT_ERR'`) and closes the listener,
   * as `server.listen({ signal })` does; no thread is left waiting for a peer.
   */
  signal?: AbortSignal
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
  /**
   * Resolve the range's faults natively on the loop thread (no JavaScript per fault). Registering
   * a range again without a source keeps the source of each part that had one (the modes must
   * still include the faults it serves: `missing`, or `minor` for the page cache, else `EINVAL`);
   * another source than the one a part has is refused with `EEXIST` (unregister first).
   */
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
  /**
   * At most this many bytes of the range stay resident, whether a source or the handler serves
   * it (a page dropped faults again, and the handler is asked again). Pages are noted as faults
   * map them; above the high water mark the process's evictor thread drops pages
   * (`MADV_DONTNEED`, in batches, off the fault path) down to the low one: pages mapped once
   * first, oldest first, then pages that faulted again after they were dropped (2Q: a hot set
   * that fits stays). A dropped page faults again on its next touch and is served from the source
   * again, byte for byte. Pages are
   * mapped write-protected: a page the program writes is marked written before the write lands,
   * and is never dropped as it is: written back first with a writable file source
   * (`Source.file(path, { writable: true })`), else kept resident for good (counted against the
   * limit). Nothing written is dropped. What a handler maps (`copy`, `zero`) is mapped
   * write-protected whatever it asks; `move` into the range is refused. Private anonymous
   * memory, or shared shmem or hugetlb memory (a dropped page is a hole punched in its file),
   * missing faults only, a file, layers, bytes, zero or object-store source; not with
   * `prefetch()`, nor on a userfaultfd with `EVENT_REMOVE` or `WP_ASYNC`. Its low water mark must
   * hold a readahead window (`readahead.maxPages` pages, at least 16), and for an object store a
   * chunk. See {@link UffdStats.residency}.
   *
   * @example
   * ```ts
   * uffd.register(region, { source: Source.file('model.bin'), maxResident: 256 * 2 ** 20 })
   * ```
   */
  maxResident?: number | ResidencyLimit
}

/** Options of {@link Userfaultfd.flush}. */
export interface FlushOptions {
  /** Also flush the files to the disk (fsync). Default false. */
  sync?: boolean
}

/** A residency limit with its water marks ({@link RegisterOptions.maxResident}). */
export interface ResidencyLimit {
  /** Bytes resident at most. */
  bytes: number
  /** Eviction starts above this fraction of `bytes`. Default 0.9. */
  high?: number
  /** ... and drops pages down to this fraction. Default 0.7. */
  low?: number
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
  /**
   * Where the region's first byte is in a file or layered source, past the source's own offset:
   * one source serves the many regions of one memory file (a VM's), each from its own place.
   * Default 0.
   */
  sourceOffset?: number
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

/** Options of {@link Userfaultfd.unregister}: a page-aligned part of the region. */
export interface RangeOptions {
  /** Where the range starts in the region (page-aligned). Default 0. */
  offset?: number
  /** Length of the range (a multiple of the page size). Default: to the region's end. */
  length?: number
}

/** The `wake` option of every resolve, and the options of {@link Fault.unprotect}, {@link Userfaultfd.zero}, {@link Userfaultfd.poison}. */
export interface WakeOptions {
  /** Wake the waiting threads once the pages are mapped. Default true; false is `*_MODE_DONTWAKE`. */
  wake?: boolean
}

/** Options of a COPY or CONTINUE: {@link Fault.copy}, {@link Userfaultfd.copy}, {@link Userfaultfd.continue}. */
export interface MapOptions extends WakeOptions {
  /** Map the pages write-protected (`*_MODE_WP`), so that their first write is a wp fault. Default false. */
  writeProtect?: boolean
}

/** Options of {@link Fault.zero}: how much to resolve from the fault's page on, and whether to wake. */
export interface FaultRangeOptions extends WakeOptions {
  /** Bytes to resolve from the fault's page on (a multiple of the page size). Default: one page. */
  length?: number
}

/** Options of {@link Fault.continue} (UFFDIO_CONTINUE). */
export interface ContinueOptions extends FaultRangeOptions {
  /** Map the pages write-protected (`CONTINUE_MODE_WP`). Default false. */
  writeProtect?: boolean
}

/**
 * Options of a UFFDIO_MOVE: {@link Fault.move}, and {@link Userfaultfd.move} (which takes its
 * length as an argument, not as `length`).
 */
export interface MoveOptions extends FaultRangeOptions {
  /** Skip source pages that are not populated instead of failing with ENOENT. Default false. */
  allowSourceHoles?: boolean
}

/** @deprecated The same as {@link WakeOptions}. */
export type WakeOption = WakeOptions
/** @deprecated The same as {@link MapOptions}. */
export type MapOption = MapOptions
/** @deprecated The same as {@link MoveOptions}. */
export type MoveOption = MoveOptions

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
  /**
   * Handler workers to start, 1 to 64 (default 1): each loads the module and serves faults beside
   * the others (with `direct`, each reads the userfaultfd itself), so faults of many threads are
   * handled on as many cores. Resolves once all of them are ready; `off()` terminates them all.
   */
  workers?: number
  /**
   * Aborting before the worker is ready terminates it and rejects with an `AbortError`
   * (`code: 'ABORT_ERR'`); the handler it would replace serves on.
   */
  signal?: AbortSignal
}

// The options of Region and Source are theirs (this module builds on both classes, so they
// cannot import from it); they are listed here so that every option type is found in one place.
export type { HugetlbOptions, ShmemOptions } from './region'
export type { FileSourceOptions } from './source'

// From here on: a caller's options made complete for the binding. Each function checks the
// types in the order the arguments are named, so the first wrong one is the one reported.

/** The binding's options of a userfaultfd you open (`'open'`) or adopt (`'adopt'`). */
export function bindingOptionsOf(options: UserfaultfdOptions | undefined, how: 'open' | 'adopt'): BindingOptions {
  const { features, userModeOnly, fallback, timeoutMs, spinMicros, readers } = optionsOf('options', options)
  const readerCount = optionalInteger('options.readers', readers) ?? DEFAULTS.readers
  if (readerCount < 1 || readerCount > 64) throw rangeError('options.readers', 'from 1 to 64', readerCount)
  if (features !== undefined && !Array.isArray(features) && !(features instanceof Set)) {
    throw argumentError('options.features', 'an array or a Set of feature names', features)
  }
  const timeout = optionalInteger('options.timeoutMs', timeoutMs) ?? DEFAULTS.timeoutMs
  return {
    features: features === undefined ? [] : Array.from(features, String),
    // Undefined asks the binding to find what is permitted: no default can say that.
    userModeOnly: how === 'open' && userModeOnly !== undefined ? optionalBoolean('options.userModeOnly', userModeOnly, false) : undefined,
    fallback: fallback ?? (how === 'open' ? DEFAULTS.fallback : DEFAULTS.adoptionFallback),
    // The binding says "no limit" by an absent timeout.
    timeoutMs: timeout === 0 ? undefined : timeout,
    spinMicros: optionalInteger('options.spinMicros', spinMicros) ?? DEFAULTS.spinMicros,
    readers: readerCount,
  }
}

/** The ranges of {@link AdoptFdOptions}, as the binding takes them. */
export function remoteRangesOf(options: AdoptFdOptions | undefined): BindingRemoteRange[] {
  const { ranges } = optionsOf('options', options)
  if (!Array.isArray(ranges)) throw argumentError('options.ranges', 'an array of { address, length, pageSize }', ranges)
  return ranges.map((range, i) => {
    const address = typeof range?.address === 'bigint' ? Number(range.address) : range?.address
    return {
      address: integer(`options.ranges[${i}].address`, address),
      length: integer(`options.ranges[${i}].length`, range.length),
      pageSize: integer(`options.ranges[${i}].pageSize`, range.pageSize),
    }
  })
}

/** What `register` sends: the range with its readahead, and the source. */
export function registrationOf(
  region: Region,
  options: RegisterOptions | undefined,
): { handle: BindingRegion; range: BindingRegistration; source: Source | undefined } {
  const { missing, minor, wp, offset, length, source, readahead, fallthrough, maxResident } = optionsOf('options', options)
  // A page-cache source serves minor faults: it implies `minor` unless told otherwise.
  const wantsMinor = optionalBoolean('options.minor', minor, source instanceof Source && source.kind === 'pageCache')
  const wantsWp = optionalBoolean('options.wp', wp, false)
  const wantsMissing = optionalBoolean('options.missing', missing, !wantsMinor && !wantsWp)
  const { handle, offset: at, length: len } = rangeOf(region, { offset, length })
  if (source !== undefined && !(source instanceof Source)) throw argumentError('options.source', 'a Source', source)
  const ahead = optionsOf('options.readahead', readahead)
  const pages = optionalInteger('options.readahead.pages', ahead.pages) ?? DEFAULTS.readaheadPages
  const maxPages = optionalInteger('options.readahead.maxPages', ahead.maxPages) ?? Math.max(pages, 1) * DEFAULTS.readaheadMaxFactor
  const range = {
    missing: wantsMissing,
    minor: wantsMinor,
    wp: wantsWp,
    offset: at,
    length: len,
    readaheadPages: pages,
    readaheadMaxPages: maxPages,
    adaptive: optionalBoolean('options.readahead.adaptive', ahead.adaptive, false),
    fallthrough: optionalBoolean('options.fallthrough', fallthrough, false),
    ...residencyOf(maxResident, maxPages, region.pageSize),
  }
  return { handle, range, source }
}

/** The residency limit asked for, checked: whole bytes, room for the readahead window, marks in order. */
function residencyOf(
  limit: RegisterOptions['maxResident'],
  windowPages: number,
  pageSize: number,
): { maxResident?: number; residentHigh?: number; residentLow?: number } {
  if (limit === undefined) return {}
  if (typeof limit !== 'number' && (typeof limit !== 'object' || limit === null)) {
    throw argumentError('options.maxResident', 'a number of bytes, or { bytes, high, low }', limit)
  }
  const { bytes, high, low } =
    typeof limit === 'number' ? { bytes: limit, high: undefined, low: undefined } : optionsOf('options.maxResident', limit)
  const name = typeof limit === 'number' ? 'options.maxResident' : 'options.maxResident.bytes'
  const highMark = high ?? 0.9
  const lowMark = low ?? 0.7
  if (typeof highMark !== 'number' || !(highMark > 0 && highMark <= 1)) {
    throw rangeError('options.maxResident.high', 'a fraction above 0, at most 1', Number(highMark))
  }
  if (typeof lowMark !== 'number' || !(lowMark > 0 && lowMark < highMark)) {
    throw rangeError('options.maxResident.low', `a fraction above 0 and below high (${highMark})`, Number(lowMark))
  }
  // What is left after an eviction holds a whole readahead window: pages mapped ahead of a
  // sequential reader are not dropped before it reads them.
  const window = Math.max(windowPages, 16) * pageSize
  const least = Math.ceil(window / lowMark / pageSize) * pageSize
  const most = integer(name, bytes)
  if (most < least) {
    throw rangeError(
      name,
      `at least ${least} (a readahead window of ${window / pageSize} pages below the low water mark, ${lowMark})`,
      most,
    )
  }
  return { maxResident: most, residentHigh: highMark, residentLow: lowMark }
}

/** What `serve` sends: the range with its readahead and what a removed range gets, the source, the recorder. */
export function servingOf(
  region: Region,
  options: ServeOptions,
): { handle: BindingRegion; how: BindingServe; source: Source; trace: TraceRecorder | undefined } {
  const { source, readahead, fallthrough, afterRemove, trace, offset, length, sourceOffset } = optionsOf('options', options)
  if (!(source instanceof Source)) throw argumentError('options.source', 'a Source', source)
  if (trace !== undefined && !(trace instanceof TraceRecorder)) throw argumentError('options.trace', 'a TraceRecorder', trace)
  const removed = afterRemove ?? (region.kind === 'remote' ? 'zeros' : 'source')
  if (removed !== 'zeros' && removed !== 'source') throw argumentError('options.afterRemove', "'zeros' or 'source'", afterRemove)
  const { handle, offset: at, length: len } = rangeOf(region, { offset, length })
  const ahead = optionsOf('options.readahead', readahead)
  const pages = optionalInteger('options.readahead.pages', ahead.pages) ?? DEFAULTS.readaheadPages
  const how = {
    offset: at,
    length: len,
    readaheadPages: pages,
    readaheadMaxPages: optionalInteger('options.readahead.maxPages', ahead.maxPages) ?? Math.max(pages, 1) * DEFAULTS.readaheadMaxFactor,
    adaptive: optionalBoolean('options.readahead.adaptive', ahead.adaptive, false),
    fallthrough: optionalBoolean('options.fallthrough', fallthrough, false),
    zeroRemoved: removed === 'zeros',
    sourceOffset: optionalInteger('options.sourceOffset', sourceOffset) ?? 0,
  }
  return { handle, how, source, trace }
}

/** A part of a region, made complete: from `offset` (default 0) to the region's end unless `length` says. */
export function rangeOf(region: Region, options: RangeOptions | undefined): { handle: BindingRegion; offset: number; length: number } {
  const { offset, length } = optionsOf('options', options)
  const at = optionalInteger('options.offset', offset) ?? 0
  const len = optionalInteger('options.length', length)
  const handle = bindingRegionOf(region)
  return { handle, offset: at, length: len ?? Math.max(0, region.size - at) }
}

/** What `prefetch` sends: the ranges (default the whole region), the source, the chunk size. */
export function prefetchOf(
  region: Region,
  ranges: ByteRange[] | undefined,
  options: PrefetchOptions | undefined,
): { ranges: BindingRange[]; source: Source | undefined; chunkPages: number; signal: AbortSignal | undefined } {
  const { source, chunkPages, signal } = optionsOf('options', options)
  if (source !== undefined && !(source instanceof Source)) throw argumentError('options.source', 'a Source', source)
  optionalSignal('options.signal', signal)
  if (ranges !== undefined && !Array.isArray(ranges)) throw argumentError('ranges', 'an array of { offset, length }', ranges)
  const list = (ranges ?? [{ offset: 0, length: region.size }]).map((range, i) => {
    const { offset, length } = optionsOf(`ranges[${i}]`, range)
    return { offset: integer(`ranges[${i}].offset`, offset), length: integer(`ranges[${i}].length`, length) }
  })
  const chunk = optionalInteger('options.chunkPages', chunkPages)
  const huge = region.pageSize > 4096
  return {
    ranges: list,
    source,
    chunkPages: chunk ?? (huge ? DEFAULTS.prefetchChunkHugePages : DEFAULTS.prefetchChunkPages),
    signal,
  }
}

/** The `wake` of any resolve's options. */
export function wakeOf(options: WakeOptions | undefined): boolean {
  return optionalBoolean('options.wake', optionsOf('options', options).wake, DEFAULTS.wake)
}

/** The `writeProtect` of a COPY's or CONTINUE's options. */
export function protectOf(options: MapOptions | undefined): boolean {
  return optionalBoolean('options.writeProtect', optionsOf('options', options).writeProtect, DEFAULTS.writeProtect)
}

/** The `allowSourceHoles` of a MOVE's options. */
export function holesOf(options: MoveOptions | undefined): boolean {
  return optionalBoolean('options.allowSourceHoles', optionsOf('options', options).allowSourceHoles, DEFAULTS.allowSourceHoles)
}

/** {@link HandleOptions}, complete. */
/**
 * A handler worker serves beside the serving handlers instead of replacing them (its parent
 * replaces them once the whole group is ready): `handle(fn, { [JOIN]: true })`, in worker-host.ts only.
 * @internal
 */
export const JOIN: unique symbol = Symbol('userfaultfd.join')

export function handleOptionsOf(options: HandleOptions | undefined): { keepAlive: boolean; direct: boolean; join: boolean } {
  const { keepAlive, direct } = optionsOf('options', options)
  return {
    keepAlive: optionalBoolean('options.keepAlive', keepAlive, DEFAULTS.keepAlive),
    direct: optionalBoolean('options.direct', direct, DEFAULTS.direct),
    join: (options as { [JOIN]?: boolean } | undefined)?.[JOIN] === true,
  }
}

/** {@link WorkerHandlerOptions}, complete (the worker's own options pass as they are). */
export function workerOptionsOf(options: WorkerHandlerOptions | undefined): WorkerHandlerOptions & { direct: boolean; workers: number } {
  const given = optionsOf('options', options)
  optionalSignal('options.signal', given.signal)
  const direct = optionalBoolean('options.direct', given.direct, DEFAULTS.workerDirect)
  const workers = optionalInteger('options.workers', given.workers) ?? DEFAULTS.workers
  if (workers < 1 || workers > 64) throw rangeError('options.workers', 'from 1 to 64', workers)
  return { ...given, direct, workers }
}
