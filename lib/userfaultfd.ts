// Userfaultfd: the public face of one userfaultfd. It owns the lifecycle and the binding handle;
// options.ts makes the binding's arguments, dispatch.ts serves the faults, worker.ts the handler
// workers, events.ts and stats.ts say what happened.
import { EventEmitter } from 'node:events'
import type { BindingAdoption, BindingUffd, JsEvent, JsNotice } from './binding'
import { Dispatcher, type FaultHandler, type InstalledHandler, installed } from './dispatch'
import { argumentError, call, fromFailure, fromNotice, UffdError } from './errors'
import { emitRangeEvent, eventOfForwarded, type RangeEvent, type RemapEvent, report } from './events'
import { closeAllOnExit, forgetOwner, type Owner, rememberOwner, sayAtExit } from './exit'
import { type FeatureName, type FeatureSet, type IoctlName, type IoctlSet, nameSet, type ProbeResult } from './features'
import { binding } from './loader'
import {
  type AdoptFdOptions,
  type ByteRange,
  bindingOptionsOf,
  DEFAULTS,
  type DirtyOptions,
  type FlushOptions,
  type HandleOptions,
  handleOptionsOf,
  holesOf,
  type MapOptions,
  type MoveOptions,
  type PrefetchOptions,
  prefetchOf,
  protectOf,
  type RangeOptions,
  type RegisterOptions,
  rangeOf,
  registrationOf,
  remoteRangesOf,
  type ServeOptions,
  servingOf,
  type UserfaultfdOptions,
  type WakeOptions,
  type WorkerHandlerOptions,
  wakeOf,
  workerOptionsOf,
} from './options'
import { bindingRegionOf, Region } from './region'
import { type LatencyReport, statsOf, type UffdStats } from './stats'
import { bytesOf, integer, optionalBoolean, optionalInteger, options as optionsOf } from './validate'
import { HandlerWorkers, moduleSpecifier } from './worker'

/** What the kernel allows on a registered range. */
export interface Registration {
  /** The ioctls the kernel allows on the range (UFFDIO_REGISTER's `ioctls`), e.g. COPY, ZEROPAGE, WAKE. */
  readonly ioctls: IoctlSet
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

/** What `uffd.share()` returns: post it to a worker and `Userfaultfd.attach` it there. */
export interface SharedUserfaultfd {
  /** Always `'userfaultfd.uffd'`: marks the token as a userfaultfd's. */
  readonly type: 'userfaultfd.uffd'
  /** The userfaultfd's id in this process's registry of live userfaultfds. */
  readonly id: number
}

/** The process at the other end of a handshake socket (SO_PEERCRED). */
export interface Peer {
  /** The peer's process id. */
  readonly pid: number
  /** The peer's user id. */
  readonly uid: number
  /** The peer's group id. */
  readonly gid: number
}

/** An adopted userfaultfd: install a handler on `uffd`; each fault's `region` is one of `regions`. */
export interface Adoption {
  /** The adopted userfaultfd, with its fault loop running; install a handler on it. */
  readonly uffd: Userfaultfd
  /** A `'remote'` region per range: no buffer here, resolves only. */
  readonly regions: readonly Region[]
  /** Where each region's bytes start in the peer's snapshot file (the handshake's `offset`). */
  readonly offsets: readonly number[]
  /** The process that sent the handshake (SO_PEERCRED); undefined for {@link adoptFd}. */
  readonly peer: Peer | undefined
}

/** A fork of the process with registered memory (EVENT_FORK). */
export interface ForkEvent {
  /** The child's userfaultfd, or undefined where only the parent's thread saw the fork (a handler worker forwards none). */
  readonly child: Userfaultfd | undefined
  /** The child's copy of the registered memory, as `'remote'` regions (empty when `child` is undefined). */
  readonly regions: readonly Region[]
}

/**
 * Events of a userfaultfd. The non-cooperative ones need their feature (`EVENT_REMOVE`...). Declared
 * here, not in events.ts with the others, because 'fork' names this class.
 */
export interface UserfaultfdEvents {
  /** The userfaultfd closed: by `close()`, or by itself when the peer whose memory it served hung up. Emitted on the next tick. */
  close: []
  /** Trouble in the fault path (an `ERR_UFFD_*` code); with no listener it becomes a process warning, not a throw. */
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

/** The key of the token with which only this module makes a Userfaultfd over a binding handle. */
const OVER = Symbol('userfaultfd.over')
/** A binding handle made elsewhere, and whether this thread owns it (an adoption) or only attached to it. */
type Over = { [OVER]: { handle: BindingUffd; owner: boolean } }

let warnedUserModeOnly = false

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
  readonly #binding: BindingUffd
  readonly #features: FeatureSet
  /** The id of the fd in this process, which the per-fault calls name it by. */
  readonly #id: number
  readonly #dispatcher: Dispatcher
  readonly #workers: HandlerWorkers
  readonly #children = new Set<Userfaultfd>()
  #closed = false
  /** Counts this thread's `handle()` calls: an `off()` removes only the handler it was given for. */
  #handled = 0
  /** This thread's handler, if any. */
  #handler: FaultHandler | undefined
  /** This owner's entry in the exit's list. */
  #self: WeakRef<Owner> | undefined
  /** Keeps this thread's event loop alive while the userfaultfd is open (`ref()`). */
  #keeper: ReturnType<typeof setInterval> | undefined

  /** Opens a userfaultfd (non-blocking), negotiates features and starts its fault loop. */
  constructor(options?: UserfaultfdOptions) {
    super()
    const over = (options as Partial<Over> | null | undefined)?.[OVER]
    if (over) {
      this.#binding = over.handle
    } else {
      const bindingOptions = bindingOptionsOf(options, 'open')
      this.#binding = call(() => new binding.BindingUffd(bindingOptions))
      if (bindingOptions.userModeOnly === undefined && this.#binding.userModeOnly) warnUserModeOnly()
    }
    this.#features = nameSet<FeatureName>(this.#binding.features)
    this.#id = this.#binding.id
    this.#dispatcher = new Dispatcher(this.#binding, this.#id, {
      report: (error) => report(this, error),
      event: (raw, handler) => this.#onEvent(raw, handler),
      notice: (notice) => this.#onNotice(notice),
    })
    this.#workers = new HandlerWorkers(this.#binding, this.#id, {
      report: (error) => report(this, error),
      event: (name, event) => this.#onEvent(eventOfForwarded(name, event)),
      closed: () => this.#closed,
    })
    if (over?.owner !== false) {
      // The owner hears what no handler hears: faults with no handler, timeouts, a peer gone.
      // Held weakly: a userfaultfd dropped without close() must still be collected (and closed).
      const self = rememberOwner(this)
      this.#self = self
      this.#binding.observe(() => {
        const uffd = self.deref()
        if (uffd) uffd.#onNotices()
      })
      closeAllOnExit()
    }
  }

  /**
   * At the process's exit: what the owner has not heard yet is said now, synchronously (an event
   * loop that will not turn again delivers nothing, and a process warning waits for a tick).
   * @internal
   */
  [sayAtExit](): void {
    for (const item of this.#binding.takeNotices()) {
      if (!item.notice) continue
      const error = fromNotice(item.notice)
      if (this.listenerCount('error') > 0) this.emit('error', error)
      else process.stderr.write(`(${process.release.name}:${process.pid}) [${error.code}] UffdError: ${error.message}\n`)
    }
  }

  /** What the kernel offers (features and ioctls), asked on a throwaway fd. */
  static probe(): ProbeResult {
    const { api, features, ioctls } = call(() => binding.BindingUffd.probe())
    return { api, features: nameSet<FeatureName>(features), ioctls: nameSet<IoctlName>(ioctls) }
  }

  /** A handle, in this thread, on a userfaultfd shared with `uffd.share()`. It does not own the fd. */
  static attach(shared: SharedUserfaultfd): Userfaultfd {
    if (typeof shared !== 'object' || shared === null || shared.type !== 'userfaultfd.uffd') {
      throw argumentError('shared', 'the result of uffd.share()', shared)
    }
    const id = integer('shared.id', shared.id)
    return Userfaultfd.#over(
      call(() => binding.BindingUffd.attach(id)),
      false,
    )
  }

  /**
   * Serves a userfaultfd that another process created and registered (a VM monitor, a restored
   * process), which this process holds as `fd`: `ranges` are the ranges of that process's memory it
   * registered. Faults there resolve with `copy`/`zero` like local ones; the regions have no buffer.
   */
  static fromFd(fd: number, options: AdoptFdOptions): Adoption {
    const ranges = remoteRangesOf(options)
    const at = integer('fd', fd)
    const bindingOptions = bindingOptionsOf(options, 'adopt')
    return Userfaultfd.fromAdoption(call(() => binding.adoptFd(at, ranges, bindingOptions)))
  }

  /** @internal The public face of a native adoption (a handshake's, an fd's, a fork's child). */
  static fromAdoption(adoption: BindingAdoption): Adoption {
    const handle = adoption.takeUffd()
    if (!handle) throw new UffdError('the adoption was already taken', { code: 'EINVAL' })
    const pid = adoption.peerPid
    const uffd = Userfaultfd.#over(handle, true)
    // While its peer is connected, serving it is what keeps this process up (closed when it hangs up).
    if (pid != null) uffd.ref()
    return {
      uffd,
      regions: adoption.takeRegions().map((region) => Region.fromBinding(region)),
      offsets: adoption.offsets,
      peer: pid == null ? undefined : { pid, uid: adoption.peerUid ?? -1, gid: adoption.peerGid ?? -1 },
    }
  }

  /** A Userfaultfd over a binding handle made elsewhere: an adoption it owns, or an attached handle. */
  static #over(handle: BindingUffd, owner: boolean): Userfaultfd {
    const token: Over = { [OVER]: { handle, owner } }
    return new Userfaultfd(token as UserfaultfdOptions)
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
  get features(): FeatureSet {
    return this.#features
  }
  /** Whether only user-mode faults are handled (kernel-mode accesses get EFAULT instead). */
  get userModeOnly(): boolean {
    return this.#binding.userModeOnly
  }
  /**
   * Whether the userfaultfd is closed: by `close()`, or by itself when the peer of an adoption hung
   * up. Calls on a closed userfaultfd throw EBADF; a handle from `attach` is closed once its own
   * `close()` has stopped its handler, though the fd stays open for its owner (and its calls reach it).
   */
  get closed(): boolean {
    return this.#closed || this.#binding.closed
  }

  /** A token to post to a worker thread, where `Userfaultfd.attach(token)` gives a handle. */
  share(): SharedUserfaultfd {
    return { type: 'userfaultfd.uffd', id: this.#id }
  }

  /**
   * Registers a region (or a page-aligned part of it) for missing, minor and/or wp faults. A range
   * registered again gets the modes of the new registration (as `UFFDIO_REGISTER` does) and keeps
   * its source unless the new one names the same one: see {@link RegisterOptions.source}.
   *
   * @example
   * ```ts
   * uffd.register(region, { source: Source.file('snapshot.bin') })
   * uffd.register(region, { missing: true, wp: true }) // adds write-protection; the file serves on
   * ```
   */
  register(region: Region, options?: RegisterOptions): Registration {
    const { handle, range, source } = registrationOf(region, options)
    const ioctls = call(() => this.#binding.register(handle, range, source?.binding))
    return { ioctls: nameSet<IoctlName>(ioctls) }
  }

  /**
   * Serves a range that is registered already (another process's memory: an adopted region) from a
   * native source, on the loop thread, with no JavaScript per fault; no ioctl. Faults that came
   * before it and wait for a handler are served by the source at once.
   *
   * @example
   * ```ts
   * const { uffd, regions, offsets } = await listener.accept()
   * regions.forEach((region, i) => uffd.serve(region, { source: Source.file('vm.mem', { offset: offsets[i] }), readahead: { pages: 16, adaptive: true } }))
   * ```
   */
  serve(region: Region, options: ServeOptions): void {
    const { handle, how, source, trace } = servingOf(region, options)
    call(() => this.#binding.serve(handle, how, source.binding, trace?.binding))
  }

  /** Native sources' fault latency (p50, p99) and when the first fault came. */
  latency(): LatencyReport {
    const { count, p50Micros, p99Micros, firstFaultMs } = this.#binding.latency()
    return { count, p50Micros, p99Micros, firstFaultMs: firstFaultMs ?? undefined }
  }

  /** Unregisters a region or part of it; threads waiting there are woken and fault normally. */
  unregister(region: Region, options?: RangeOptions): void {
    const { handle, offset, length } = rangeOf(region, options)
    call(() => this.#binding.unregister(handle, offset, length))
  }

  /** UFFDIO_COPY of `bytes` (a multiple of the page size) to `offset`; returns the bytes mapped. */
  copy(region: Region, offset: number, bytes: ArrayBufferView | ArrayBuffer, options?: MapOptions): number {
    const data = bytesOf('bytes', bytes)
    const wake = wakeOf(options)
    const protect = protectOf(options)
    const handle = bindingRegionOf(region)
    return call(() => this.#binding.copy(handle, integer('offset', offset), data, wake, protect))
  }

  /** UFFDIO_ZEROPAGE over a range (not hugetlbfs); returns the bytes mapped. */
  zero(region: Region, offset: number, length: number, options?: WakeOptions): number {
    const handle = bindingRegionOf(region)
    return call(() => this.#binding.zero(handle, integer('offset', offset), integer('length', length), wakeOf(options)))
  }

  /** UFFDIO_CONTINUE over a range: maps pages already in the page cache; returns the bytes mapped. */
  continue(region: Region, offset: number, length: number, options?: MapOptions): number {
    const handle = bindingRegionOf(region)
    const protect = protectOf(options)
    return call(() => this.#binding.continue(handle, integer('offset', offset), integer('length', length), wakeOf(options), protect))
  }

  /**
   * Write-protects a range registered with `wp: true`, or lifts the protection (waking writers
   * waiting there unless `{ wake: false }`). A write to a protected page is a `'wp'` fault.
   */
  writeProtect(region: Region, offset: number, length: number, protect: boolean, options?: WakeOptions): void {
    const handle = bindingRegionOf(region)
    if (typeof protect !== 'boolean') throw argumentError('protect', 'a boolean', protect)
    call(() => this.#binding.writeProtect(handle, integer('offset', offset), integer('length', length), protect, wakeOf(options)))
  }

  /**
   * UFFDIO_MOVE (Linux 6.8): moves `length` bytes of pages from `fromOffset` of `from` to `offset`
   * of `region` without copying; the source becomes empty. Both regions are anonymous, `region`
   * is registered. Returns the bytes moved. (`options.length` is not read: `length` says it.)
   */
  move(region: Region, offset: number, from: Region, fromOffset: number, length: number, options?: MoveOptions): number {
    const handle = bindingRegionOf(region)
    const source = bindingRegionOf(from, 'from')
    optionsOf('options', options)
    const how = {
      fromOffset: integer('fromOffset', fromOffset),
      length: integer('length', length),
      wake: wakeOf(options),
      allowSourceHoles: holesOf(options),
    }
    return call(() => this.#binding.move(handle, integer('offset', offset), source, how))
  }

  /**
   * Offsets of the pages of `region` written since they were last protected, without a fault per
   * write: open the userfaultfd with `features: ['WP_ASYNC']`, register the region with `wp: true`,
   * protect it with `writeProtect`, and the kernel lifts each page's protection itself on its first
   * write. With `{ clear: true }` the reported pages are protected again.
   */
  dirtyPages(region: Region, options?: DirtyOptions): number[] {
    const handle = bindingRegionOf(region)
    const { clear, method = 'auto' } = optionsOf('options', options)
    if (!['auto', 'scan', 'pagemap'].includes(method)) throw argumentError('options.method', "'auto', 'scan' or 'pagemap'", method)
    return call(() => this.#binding.dirtyPages(handle, optionalBoolean('options.clear', clear, false), method))
  }

  /**
   * Writes the pages the program wrote in ranges served from a writable file source
   * (`Source.file(path, { writable: true })`) back to their files; with `{ sync: true }` also to
   * the disk (fsync). Resolves once everything written before the call is in the files; rejects
   * with a UffdError that names the file, the offset and the errno of the first write-back that
   * failed (those pages stay written, and the next flush tries them again).
   *
   * @example
   * ```ts
   * uffd.register(region, { source: Source.file('data.bin', { writable: true }), maxResident: 2 ** 28 })
   * new Uint8Array(region.buffer)[42] = 1
   * await uffd.flush({ sync: true })   // data.bin has it, on disk
   * ```
   */
  async flush(options?: FlushOptions): Promise<void> {
    const sync = optionalBoolean('options.sync', optionsOf('options', options).sync, false)
    const failure = await call(() => this.#binding.flush(sync))
    if (failure) throw fromFailure(failure)
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
    return this.prefetchSettled(region, ranges, options).then(({ error, ...result }) => {
      if (error) throw error
      return result
    })
  }

  /**
   * {@link prefetch}, resolving with what was mapped even when an error ended it early (the
   * Firecracker server counts a replay's pages whatever becomes of it).
   * @internal
   */
  prefetchSettled(region: Region, ranges?: ByteRange[], options?: PrefetchOptions): Promise<PrefetchResult & { error?: Error }> {
    const handle = bindingRegionOf(region)
    const { ranges: list, source, chunkPages, signal } = prefetchOf(region, ranges, options)
    const job = call(() => this.#binding.prefetch(handle, list, source?.binding, chunkPages))
    if (signal?.aborted) job.cancel()
    const onAbort = () => job.cancel()
    signal?.addEventListener('abort', onAbort, { once: true })
    return job.start().then((outcome) => {
      signal?.removeEventListener('abort', onAbort)
      const { mapped, present, yields, stopped } = outcome
      return { mapped, present, yields, stopped, ...(outcome.error ? { error: fromFailure(outcome.error) } : {}) }
    })
  }

  /**
   * @internal Prefetches each of `regions` whole, one after the other, from its registration's
   * source, in one native task: for the thousands of regions of one VM (one promise, not one each).
   * Resolves with what was mapped, and the error that ended it early, if one did.
   */
  prefetchRegions(regions: readonly Region[], options?: { chunkPages?: number }): Promise<PrefetchResult & { error?: Error }> {
    const ids = regions.map((region) => region.id)
    const chunkPages = optionalInteger('options.chunkPages', options?.chunkPages) ?? DEFAULTS.prefetchChunkPages
    const job = call(() => this.#binding.prefetchRegions(ids, chunkPages))
    return job.start().then((outcome) => ({
      mapped: outcome.mapped,
      present: outcome.present,
      yields: outcome.yields,
      stopped: outcome.stopped,
      ...(outcome.error ? { error: fromFailure(outcome.error) } : {}),
    }))
  }

  /** UFFDIO_POISON over a range: a later access raises SIGBUS. Returns the bytes poisoned. */
  poison(region: Region, offset: number, length: number, options?: WakeOptions): number {
    const handle = bindingRegionOf(region)
    return call(() => this.#binding.poison(handle, integer('offset', offset), integer('length', length), wakeOf(options)))
  }

  /** UFFDIO_WAKE over a range, after resolves with `{ wake: false }`. */
  wake(region: Region, offset: number, length: number): void {
    const handle = bindingRegionOf(region)
    call(() => this.#binding.wake(handle, integer('offset', offset), integer('length', length)))
  }

  /**
   * Serves faults with `handler` on this thread, in place of any handler before. Faults taken by
   * this thread itself cannot be served here (the thread is asleep in the kernel): they get the
   * fallback and an `'error'` event (`ERR_UFFD_SELF_FAULT`). Use `handleInWorker` to serve this
   * thread's reads. Returns what removes the handler again (`off()`, or `using`).
   */
  handle(handler: FaultHandler, options?: HandleOptions): InstalledHandler {
    if (typeof handler !== 'function') throw argumentError('handler', 'a function', handler)
    const { keepAlive, direct, join } = handleOptionsOf(options)
    const dispatcher = this.#dispatcher
    call(() => this.#binding.handle(() => dispatcher.takeBatch(handler), keepAlive, join))
    const turn = ++this.#handled
    this.#handler = handler
    const generation = direct ? call(() => this.#binding.startDirect()) : 0
    if (generation !== 0) void dispatcher.runReader(handler, generation, keepAlive)
    return installed(() => {
      if (turn !== this.#handled || this.#closed) return
      this.#handler = undefined
      this.#binding.unhandle()
    })
  }

  /** @internal The generation of this thread's handler (0: none), as the core names it. */
  get handlerGeneration(): number {
    return this.#binding.handlerGeneration
  }

  /**
   * Serves faults with the handler of `module`, run in a worker thread that the package starts
   * and owns, so that this thread may read the registered memory. `module` is a URL, an absolute
   * path, or a path relative to the current directory; an ES module (`.mjs`, `.js` in a
   * `"type": "module"` package) or a CommonJS one (`.cjs`, `.js` otherwise), in TypeScript where
   * the runtime runs it (Bun). Its handler, a `(fault) => void | Promise<void>` like
   * {@link Userfaultfd.handle}'s, is its default export (`export default`, `module.exports = fn`,
   * or a transpiled module's `exports.default`), else the export named `handler`
   * (`export function handler`, `exports.handler`, `module.exports = { handler }`); a module
   * without one rejects with `ERR_UFFD_WORKER`. Resolves once the
   * handler is installed, with what terminates the worker again (`off()`, or `using`); faults
   * taken before then wait for it. Aborting `options.signal` before then terminates the worker
   * and rejects with an `AbortError` (`code: 'ABORT_ERR'`); the handler it would replace serves on.
   *
   * @example
   * ```ts
   * // pager.mjs: export function handler(fault) { fault.copy(pageFor(fault.offset)) }
   * // or pager.cjs: module.exports = (fault) => fault.copy(pageFor(fault.offset))
   * using served = await uffd.handleInWorker('./pager.mjs', { signal: AbortSignal.timeout(5_000) })
   * ```
   */
  handleInWorker(module: string | URL, options?: WorkerHandlerOptions): Promise<InstalledHandler> {
    const spec = moduleSpecifier(module)
    const complete = workerOptionsOf(options)
    if (this.#closed) return Promise.reject(call(() => this.#binding.handle(() => {}, false)))
    return this.#workers.start(spec, complete)
  }

  /** Notices the owner's thread hears: faults with no handler, timeouts, a peer that hung up. */
  #onNotices(): void {
    // What this thread's handler was handed before is heard first (events that came before the
    // peer hung up, say); and before close(), since the handler's mailbox goes with the handle.
    if (this.#handler) this.#dispatcher.flush(this.#handler)
    for (const item of this.#binding.takeNotices()) {
      if (!item.notice) continue
      // Said when the fault came; a handler installed since (right after accept(), say), or a
      // source that served it since (serve()), has it now.
      const { kind, fault } = item.notice
      if (kind === 'no-handler' && (this.#binding.hasHandler || (fault && !this.#binding.faultWaiting(fault.id)))) continue
      this.#onNotice(item.notice)
    }
  }

  #onNotice(notice: JsNotice): void {
    report(this, fromNotice(notice))
    if (notice.kind === 'peer-gone' && !this.#closed) this.close()
  }

  #onEvent(raw: JsEvent, handler?: FaultHandler): void {
    if (raw.kind !== 'fork') {
      emitRangeEvent(this, raw)
      return
    }
    if (!raw.child) {
      this.emit('fork', { child: undefined, regions: [] })
      return
    }
    const { uffd: child, regions } = Userfaultfd.fromAdoption(raw.child)
    this.#children.add(child)
    if (handler) child.handle(handler)
    child.on('error', (error) => report(this, error))
    this.emit('fork', { child, regions })
  }

  /** Counters of faults, resolutions and fallbacks. */
  get stats(): UffdStats {
    return statsOf(this.#binding.stats())
  }

  /**
   * Stops the fault loop and closes the fd: every waiting thread is woken and faults normally
   * from then on; the handler worker, if any, is terminated. A handle from `attach` only stops its
   * handler. `'close'` is emitted on the next tick.
   */
  close(): void {
    if (this.#closed) return
    // What the fault loop said and this thread has not heard yet (a fault of this thread with no
    // handler, say) is heard before the end.
    this.#onNotices()
    this.#closed = true
    if (this.#self) forgetOwner(this.#self)
    for (const child of this.#children) child.close()
    this.#children.clear()
    this.unref()
    this.#binding.close()
    this.#workers.close()
    process.nextTick(() => this.emit('close'))
  }

  /** Calls `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close()
  }
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
