// A ready page-fault handler for Firecracker snapshot restores: one process serves any number of
// microVMs, each from its memory file (or layers of them), natively, with working-set replay.
import { EventEmitter } from 'node:events'
import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import { argumentError, rangeError, UffdError } from './errors'
import { DEFAULT_KEEPER_GRACE_MS, linkKeeper } from './keeper'
import { DEFAULTS, type ReadaheadOptions } from './options'
import type { Region } from './region'
import {
  type Adoption,
  type AdoptOptions,
  adoptHeld,
  keeperErrorOf,
  listen,
  type Peer,
  type PeerProcess,
  peerProcessOf,
  type SocketOwner,
} from './remote'
import { type ObjectSourceStats, Source } from './source'
import { readTrace, type TracedMemory, TraceRecorder, type WorkingSetTrace, writeTrace } from './trace'
import type { Userfaultfd } from './userfaultfd'
import { knownKeys } from './validate'
import { checkRecordable, WorkingSet } from './working-set'

/** Options of {@link serveFirecracker}. */
export interface FirecrackerOptions {
  /**
   * The Unix socket Firecracker's load request names as `mem_backend.backend_path`; or the fd of
   * a listening socket this process was given (systemd's socket activation: {@link activatedSocket}).
   */
  socket: string | number
  /** The socket file's mode: a number (`0o660`) or octal text (`'660'`). Default: as the umask leaves it. */
  socketMode?: number | string
  /**
   * The socket file's owner, so that a Firecracker jailed as another user can connect: `'user'`,
   * `'user:group'`, `':group'` (names or numeric ids), or `{ uid, gid }`. Default: this process's.
   */
  socketOwner?: string | SocketOwner
  /**
   * The snapshot's memory file (`mem_file_path` of the snapshot), or its layers base first (a full
   * snapshot, then diff snapshots). Or give `memory` instead.
   */
  memoryFile?: string | readonly string[]
  /**
   * The memory as a source made already: an object in a store, a plain object or a pushed
   * snapshot (`await Source.objectStore('s3://snapshots/vm.mem', ...)`), each region read from its
   * place in it. Instead of `memoryFile`. Traces (`record`, `replay`, `workingSet`) need an object
   * with an ETag; `workingSet: true` keeps the trace in the store beside it.
   */
  memory?: Source
  /**
   * How long a connection may take, from its accept, to send its handshake. Every connection is
   * read as its bytes come, so a silent, half-sent or closed one holds up no VM: it is dropped
   * with an `'error'` event when its time runs out (a connection that sent part of a handshake is
   * a VM that cannot be served: it is killed). The server keeps listening whether or not a VM
   * comes. Default 5000.
   */
  handshakeTimeoutMs?: number
  /** Write each restore's working-set trace (the order its pages were first touched) to this file when its VM exits. */
  record?: string
  /** Map the pages of this trace first, in order, as soon as a VM connects (then the rest in the background). */
  replay?: string
  /**
   * A working-set trace kept without a recording run: replayed (as `replay`) while it is there
   * and belongs to the memory files; while it is not (the first restore of a snapshot, or the
   * snapshot changed), each restore records (as `record`) and the first VM to exit served writes
   * it, for the restores that follow. Not with `record` or `replay`.
   *
   * A path, or `true` to keep it beside the memory: with `memory` an object in a store, as the
   * object `KEY.working-set.json` next to it in the same store (read before the first VM is
   * served, written with the source's credentials), so the next restore of that snapshot on any
   * host replays it; with `memoryFile`, as the file `FILE.working-set.json` next to the topmost.
   */
  workingSet?: string | true
  /** Map the rest of the memory in the background, stepping aside for faults. Default true, false when recording. */
  prefetch?: boolean
  /** Pages per fault. Default `{ pages: 16, adaptive: true, maxPages: 256 }`. */
  readahead?: ReadaheadOptions
  /** How long a fault may take before its VM gets SIGBUS for it. Default 30000. */
  timeoutMs?: number
  /**
   * A Unix socket path for a keeper: a small process of its own, started here if none listens
   * at the path, that holds a copy of each VM's userfaultfd, connection and pidfd, so that the VMs
   * survive this server. A server killed (or ended by `process.exit()`, for an upgrade) and
   * started again with the same `keeper` takes back every VM it held and wakes their faults: they
   * go on with every byte right, stalled only while no server ran. Default: none (the VMs this
   * server serves freeze for good if it dies).
   */
  keeper?: string
  /**
   * How long a keeper left with no server keeps its VMs before it kills them (a frozen VM is
   * worse than a dead one). Default 10000. Only a keeper this server starts is given it.
   */
  keeperGraceMs?: number
  /** Closes the server, as `close()` does. */
  signal?: AbortSignal
}

/** The options of {@link serveFirecracker}, each once: a key not here is a mistake. */
const FIRECRACKER_OPTIONS: Record<keyof FirecrackerOptions, true> = {
  socket: true,
  socketMode: true,
  socketOwner: true,
  memoryFile: true,
  memory: true,
  handshakeTimeoutMs: true,
  record: true,
  replay: true,
  workingSet: true,
  prefetch: true,
  readahead: true,
  timeoutMs: true,
  keeper: true,
  keeperGraceMs: true,
  signal: true,
}

/** What one restore took: a line of the server's JSON output. */
export interface VmSummary {
  /** The Firecracker process (SO_PEERCRED). */
  readonly pid: number | undefined
  /**
   * `'served'`: the VM ran until it exited; `'killed'`: the handler could not serve it and killed
   * it; `'exited'`: the handler could not serve it, and it had ended before it could be killed (a
   * guest given SIGBUS for a page that could not be served dies of it); `'abandoned'`: the handler
   * could not serve it and could not stop it (its process was not held, or the kill was refused):
   * stop it yourself; `'running'`: asked for while serving.
   */
  readonly outcome: 'served' | 'killed' | 'exited' | 'abandoned' | 'running'
  /** Why the VM was killed. */
  readonly error?: string
  /** Memory regions the VM registered. */
  readonly regions: number
  /** Fault messages read. */
  readonly faults: number
  /** Pages and bytes mapped (faults, readahead, replay and prefetch together). */
  readonly pagesMapped: number
  /** Bytes mapped, as `pagesMapped` counts pages. */
  readonly bytesMapped: number
  /** Ranges of the memory file that were holes, mapped as zeros without a read. */
  readonly holes: number
  /** Milliseconds from the handshake to the first fault. */
  readonly firstFaultMs: number | undefined
  /** The handler's fault latency (message read to resolve), in microseconds. */
  readonly faultP50Micros: number
  /** The 99th percentile of the same latency, in microseconds. */
  readonly faultP99Micros: number
  /** Pages the trace replay mapped, and the pages the background prefetch mapped. */
  readonly replayedPages: number
  /** Pages the background prefetch mapped. */
  readonly prefetchedPages: number
  /** Milliseconds from the handshake to now, or to the VM's exit. */
  readonly durationMs: number
  /**
   * With the memory in a store: its requests (and bytes, retries, failures, cache hits, pages
   * that got the fallback) from the VM's connection to now. Counted on the memory's source, so VMs
   * served at the same time share them.
   */
  readonly store?: VmStoreCounts
  /**
   * True for a VM this server took back from the keeper as it started (another server, now
   * gone, adopted it): its counts and `durationMs` start at this server's start.
   */
  readonly resumed?: true
}

/** What the memory's store did for a VM: {@link VmSummary.store}, fields as {@link ObjectSourceStats} says. */
export type VmStoreCounts = Pick<
  ObjectSourceStats,
  'requests' | 'bytesFetched' | 'retries' | 'failures' | 'memoryHits' | 'diskHits' | 'fallbackPages'
>

/** What the `'keeper'` event of a {@link FirecrackerServer} says. */
export interface KeeperLinked {
  /** The keeper's socket path. */
  readonly path: string
  /** VMs it held, taken back by this server. */
  readonly vms: number
}

/** What the `'trace'` event of a {@link FirecrackerServer} says. */
export interface TraceWritten {
  /** Where the trace was written (`workingSet`): a path, or the URL of the object beside the memory. */
  readonly path: string
  /** The pages it lists, in the order the VM first touched them. */
  readonly pages: number
}

/** Events of a {@link FirecrackerServer}. */
export interface FirecrackerServerEvents {
  /** A VM connected. */
  connect: [Peer | undefined]
  /** A VM held by the keeper was taken back as this server started (see `keeper`). */
  resume: [Peer | undefined]
  /** Linked to the keeper, which held the VMs it says (each then has its `'resume'`). */
  keeper: [KeeperLinked]
  /** A working-set trace was written (`workingSet`). */
  trace: [TraceWritten]
  /** A VM's restore ended (it exited, or was killed). */
  summary: [VmSummary]
  /** Trouble: a refused or dropped handshake, a VM that could not be served. */
  error: [UffdError]
  /** The server stopped listening, every connection it took was served or dropped, and every VM it served has ended. */
  close: []
}

const DEFAULT_READAHEAD: ReadaheadOptions = { pages: 16, adaptive: true, maxPages: 256 }

/** A VM being served. */
interface Restore {
  readonly adoption: Adoption
  readonly started: number
  readonly recorder: TraceRecorder | undefined
  /** The VM's process, held by a pidfd since it connected. */
  readonly process: PeerProcess | undefined
  /** Taken back from the keeper. */
  readonly resumed: boolean
  replayed: number
  prefetched: number
  /** Settles when the trace replay and the prefetch have ended (a VM that exits ends them). */
  filled: Promise<void>
  /** When its userfaultfd closed (the VM exited, or was killed). */
  endedAt?: number
  outcome: VmSummary['outcome']
  error?: string
  /** The memory's store counts when the VM connected, for `store` in its summary. */
  readonly storeAtStart: ObjectSourceStats | undefined
}

/**
 * Serves Firecracker snapshot restores on a Unix socket: each connection is its own VM, served
 * until its Firecracker exits, from `memoryFile` natively (no JavaScript per fault), with adaptive
 * readahead, a background prefetch, holes of sparse files mapped without a read, balloon-removed
 * ranges served as zeros, and optional working-set record and replay. A VM it cannot serve is
 * killed (SIGKILL to the pid from SO_PEERCRED), never left frozen or given zeros it did not have.
 *
 * @example
 * ```ts
 * const server = serveFirecracker({ socket: '/run/fc/uffd.sock', memoryFile: 'vm.mem', replay: 'vm.trace' })
 * server.on('summary', (vm) => console.log(JSON.stringify(vm)))
 * // then: PUT /snapshot/load { ..., "mem_backend": { "backend_type": "Uffd", "backend_path": "/run/fc/uffd.sock" } }
 * ```
 */
export class FirecrackerServer extends EventEmitter<FirecrackerServerEvents> {
  readonly #options: Required<Pick<FirecrackerOptions, 'handshakeTimeoutMs' | 'readahead' | 'timeoutMs'>> & FirecrackerOptions
  readonly #files: readonly string[]
  /** The memory files, opened and checked once at the start and held open while it runs. */
  readonly #held: readonly HeldFile[]
  /** The one source every region is served from (`memory`, or made from the held files at the first VM). */
  #memory: Source | undefined
  readonly #listener: ReturnType<typeof listen>
  /** The link to the keeper, once made. */
  #keeper: Awaited<ReturnType<typeof linkKeeper>> | undefined
  /** What each VM's userfaultfd is adopted with (at a handshake, or taken back from the keeper). */
  readonly #adopt: AdoptOptions
  readonly #restores = new Set<Restore>()
  /** The trace `replay` names. */
  readonly #trace: WorkingSetTrace | undefined
  /** The trace kept without a recording run (`workingSet`). */
  #workingSet: WorkingSet | undefined
  /** `'close'` was emitted, or will be once a trace being stored is stored. */
  #closed = false
  /** Taking new connections (until `close()`). */
  #listening = true
  /** Reading the handshakes of connections taken (until the last one taken is served or dropped). */
  #accepting = true
  /** Accepts failed for want of fds, and that was said. */
  #exhausted = false

  /** Starts listening on `options.socket` (what {@link serveFirecracker} does). */
  constructor(options: FirecrackerOptions) {
    super()
    if (typeof options !== 'object' || options === null) throw argumentError('options', 'an object', options)
    knownKeys('options', options, FIRECRACKER_OPTIONS, 'serveFirecracker')
    const { socket, memoryFile, memory } = options
    if (typeof socket !== 'string' && typeof socket !== 'number') {
      throw argumentError('options.socket', 'a path, or the fd of a listening socket', socket)
    }
    if (memory !== undefined) {
      if (!(memory instanceof Source)) throw argumentError('options.memory', 'a Source', memory)
      if (memoryFile !== undefined) throw argumentError('options.memoryFile', 'unset with memory (one or the other)', memoryFile)
      if (memory.size === undefined) throw argumentError('options.memory', 'a source with a size (a file or an object)', memory.kind)
      const tracing = (['record', 'replay', 'workingSet'] as const).find((name) => options[name] !== undefined)
      if (tracing && !memory.objectStats?.etag) {
        throw argumentError(
          `options.${tracing}`,
          'unset with a memory that has no ETag: a trace could not tell it changed',
          options[tracing],
        )
      }
      this.#memory = memory
    }
    const files = memory !== undefined ? [] : typeof memoryFile === 'string' ? [memoryFile] : memoryFile
    if (memory === undefined && (!Array.isArray(files) || files.length === 0 || files.some((f) => typeof f !== 'string'))) {
      throw argumentError('options.memoryFile', 'a path or a non-empty array of paths', memoryFile)
    }
    this.#files = [...(files ?? [])]
    // A missing, unreadable, empty memory file, or a folder, fails here, before any VM waits on it.
    const held: HeldFile[] = []
    try {
      for (const file of this.#files) held.push(holdMemoryFile(file))
    } catch (error) {
      for (const file of held) closeSync(file.fd)
      throw error
    }
    this.#held = held
    this.#options = {
      handshakeTimeoutMs: DEFAULTS.firecrackerHandshakeTimeoutMs,
      readahead: DEFAULT_READAHEAD,
      timeoutMs: DEFAULTS.timeoutMs,
      ...options,
    }
    try {
      if (options.record !== undefined) checkRecordable(options.record, 'options.record')
      if (options.replay !== undefined) this.#trace = readTrace(options.replay, this.#traced())
      if (options.workingSet !== undefined) {
        if (options.record !== undefined || options.replay !== undefined) {
          throw argumentError('options.workingSet', 'unset with record or replay (it does both)', options.workingSet)
        }
        const memory = { object: this.#memory, files: this.#files, traced: () => this.#traced() }
        this.#workingSet = new WorkingSet(options.workingSet, memory, (error) => this.#report(error))
      }
      // Listening comes first: Firecracker connects as soon as its load request arrives.
      const { handshakeTimeoutMs, timeoutMs } = this.#options
      checkKeeper(options.keeper, options.keeperGraceMs)
      this.#adopt = { fallback: 'sigbus', timeoutMs, features: ['EVENT_REMOVE'] }
      this.#listener = listen(socket, {
        ...this.#adopt,
        handshakeTimeoutMs,
        ...socketFileOptions(options.socketMode, options.socketOwner),
      })
    } catch (error) {
      this.#release()
      throw error
    }
    const { signal } = this.#options
    if (signal?.aborted) queueMicrotask(() => this.close())
    else signal?.addEventListener('abort', () => this.close(), { once: true })
    void this.#acceptAll()
  }

  /** The socket it listens on (a path, or the fd it was given). */
  get socket(): string | number {
    return this.#options.socket
  }

  /** Summaries of the VMs being served now (what `SIGUSR1` prints in the command). */
  running(): VmSummary[] {
    return [...this.#restores].map((restore) => this.#summary(restore))
  }

  /**
   * Stops listening (the socket goes). No VM it took is left waiting: a connection whose
   * handshake is being read is still served if it completes in time, or dropped (killed if it
   * sent part of one); VMs being served are served to their end; then `'close'`.
   */
  close(): void {
    if (!this.#listening) return
    this.#listening = false
    this.#listener.stopAccepting()
  }

  async #acceptAll(): Promise<void> {
    await this.#workingSet?.load()
    // New connections wait in the backlog while the keeper's VMs are taken back: those froze first.
    if (this.#options.keeper !== undefined && !(await this.#linkKeeper(this.#options.keeper))) {
      this.close()
    }
    for (;;) {
      let adoption: Adoption
      try {
        adoption = await this.#listener.accept()
      } catch (error) {
        const refused = error instanceof UffdError ? error : new UffdError(String(error), { code: 'EPROTO', cause: error })
        if (refused.code === 'EBADF' && refused.syscall === 'accept') break // closed, and every connection taken is done
        if ((refused.code === 'EMFILE' || refused.code === 'ENFILE') && refused.syscall === 'accept') {
          // Out of fds: said once until an accept succeeds again; new connections wait in the
          // backlog meanwhile, and the ones taken are dropped in their time, which frees fds.
          if (!this.#exhausted) {
            this.#exhausted = true
            const limit = refused.code === 'EMFILE' ? "this process's limit (ulimit -n, systemd's LimitNOFILE=)" : "the system's limit"
            this.#report(
              new UffdError(
                `out of file descriptors to accept connections (${refused.code}): raise ${limit}; accepting again as fds free up`,
                {
                  code: refused.code,
                  syscall: 'accept',
                  cause: refused,
                },
              ),
            )
          }
          await new Promise((resolve) => setTimeout(resolve, 100))
          continue
        }
        // A VM whose handshake is refused waits for its handler forever: stop it (by its pidfd,
        // never by a pid that another process may have been given since).
        if (!refused.peer) {
          // A failure of the accept itself (no VM behind it): said, and tried again a little later.
          this.#report(refused)
          await new Promise((resolve) => setTimeout(resolve, 100))
          continue
        }
        const peerProcess = peerProcessOf(refused)
        const { what } = stop(peerProcess)
        peerProcess?.close()
        this.#report(
          new UffdError(`${refused.message}: cannot serve the VM (pid ${refused.peer.pid}); ${what}`, {
            code: refused.code,
            errno: refused.errno,
            syscall: refused.syscall,
            peer: refused.peer,
            cause: refused,
          }),
        )
        continue
      }
      this.#exhausted = false
      this.#serve(adoption)
    }
    this.#accepting = false
    this.#listener.close()
    this.#closeIfDone()
  }

  /** Links to the keeper and takes back the VMs it holds; false (said) if it cannot. */
  async #linkKeeper(path: string): Promise<boolean> {
    let keeper: Awaited<ReturnType<typeof linkKeeper>>
    try {
      keeper = await linkKeeper(path, this.#options.keeperGraceMs ?? DEFAULT_KEEPER_GRACE_MS)
    } catch (error) {
      const cause = error instanceof UffdError ? error : new UffdError(String(error), { code: 'EIO', cause: error })
      this.#report(
        new UffdError(`cannot link to the keeper at ${path}: ${cause.message}; no VM is served`, {
          code: cause.code,
          errno: cause.errno,
          syscall: cause.syscall,
          cause,
        }),
      )
      return false
    }
    this.#listener.keepWith(keeper)
    this.#keeper = keeper
    const held = adoptHeld(keeper, this.#adopt)
    this.emit('keeper', { path, vms: held.length })
    for (const vm of held) {
      if (vm instanceof UffdError) {
        const { what } = stop(peerProcessOf(vm))
        this.#report(new UffdError(`${vm.message}: cannot serve the VM taken back from the keeper; ${what}`, { code: vm.code, cause: vm }))
        continue
      }
      this.#serve(vm, true)
    }
    return true
  }

  #serve(adoption: Adoption, resumed = false): void {
    const { uffd, regions, offsets, peer } = adoption
    const kept = keeperErrorOf(adoption)
    if (kept)
      this.#report(
        new UffdError(
          `the VM${peer ? ` (pid ${peer.pid})` : ''} is served but not kept, so it would not survive a restart of this server: ${kept.message}`,
          { code: kept.code, errno: kept.errno, syscall: kept.syscall, cause: kept },
        ),
      )
    const restore: Restore = {
      adoption,
      started: Date.now(),
      recorder: this.#records(resumed) ? new TraceRecorder() : undefined,
      replayed: 0,
      prefetched: 0,
      filled: Promise.resolve(),
      outcome: 'running',
      process: peerProcessOf(adoption),
      resumed,
      storeAtStart: this.#memory?.objectStats,
    }
    this.#restores.add(restore)
    this.emit(resumed ? 'resume' : 'connect', peer)
    uffd.on('error', (error) => {
      if (error.code === 'ERR_UFFD_PEER_GONE') return
      // A fault this handler could not serve got SIGBUS in the guest: the VM is lost; end it.
      // Said with the VM's own region index and offset (a region's id is the process's).
      const index = error.fault ? regions.findIndex((region) => region.id === error.fault?.regionId) : -1
      // The core numbers regions in this process; the VM's owner knows them by their index.
      const where =
        index < 0 || !error.fault ? '' : ` (region ${error.fault.regionId} is the VM's region ${index}: offset ${error.fault.offset} of it)`
      this.#kill(restore, `${error.message}${where}`)
    })
    uffd.on('close', () => this.#ended(restore))
    try {
      this.#check(regions, offsets)
      const source = this.#source()
      regions.forEach((region, i) => {
        uffd.serve(region, {
          source,
          sourceOffset: offsets[i] ?? 0,
          readahead: this.#options.readahead,
          afterRemove: 'zeros',
          ...(restore.recorder ? { trace: restore.recorder } : {}),
        })
      })
      // Faults the server before this one read and never served sleep until woken: woken now,
      // each faults again and is delivered to this server.
      if (resumed) for (const region of regions) uffd.wake(region, 0, region.size)
    } catch (error) {
      this.#kill(restore, (error as Error).message)
      return
    }
    restore.filled = this.#fill(restore, uffd, regions, offsets)
  }

  /** The memory must cover every region the VM registered (as the files are now). */
  #check(regions: readonly Region[], offsets: readonly number[]): void {
    const given = this.#options.memory
    const what = given ? `the memory ${given.kind === 'objectStore' ? 'object' : 'source'}` : `the memory file ${this.#files[0]}`
    const size = given ? (given.size ?? 0) : Math.max(...this.#held.map((file) => fstatSync(file.fd).size))
    regions.forEach((region, i) => {
      const end = (offsets[i] ?? 0) + region.size
      if (end > size) {
        throw new UffdError(`${what} has ${size} bytes, but the VM's region ${i} ends at ${end}`, { code: 'EINVAL' })
      }
    })
  }

  /**
   * The held files, read through /proc/self/fd: what was checked at the start, whatever became of
   * its path. One source for every region of every VM, each region served from its own offset.
   */
  #source(): Source {
    const held = this.#held
    this.#memory ??= held.length === 1 ? Source.file((held[0] as HeldFile).fd) : Source.layers(held.map((file) => file.proc))
    return this.#memory
  }

  /**
   * What a trace names as the memory: the files served (read through /proc/self/fd, whatever
   * became of their paths), or the object by its size and ETag.
   */
  #traced(): TracedMemory[] {
    const given = this.#options?.memory ?? this.#memory
    const etag = given?.objectStats?.etag
    if (given && etag) {
      const object = { name: 'the memory object', size: given.objectStats?.size ?? 0, fingerprint: `etag ${etag}` }
      // Local files above the object (diffs) are named too: another diff is another memory.
      return [object, ...given.files]
    }
    return this.#held.map((file) => file.proc)
  }

  /** `message` with the held files named by their paths. */
  #named(message: string): string {
    // Longest first: /proc/self/fd/3 must not rewrite the start of /proc/self/fd/30.
    const held = [...this.#held].sort((a, b) => b.proc.length - a.proc.length)
    return held.reduce((text, file) => text.replaceAll(file.proc, file.path), message)
  }

  #release(): void {
    for (const file of this.#held) {
      try {
        closeSync(file.fd)
      } catch {}
    }
  }

  /** Replays the trace's pages first, in order, then maps the rest in the background. */
  async #fill(restore: Restore, uffd: Userfaultfd, regions: readonly Region[], offsets: readonly number[]): Promise<void> {
    try {
      const trace = this.#trace ?? this.#workingSet?.trace
      if (trace) {
        const plan = replayPlan(trace, regions, offsets)
        // Each region's pages are counted as its replay ends, whatever becomes of the others.
        const replays = plan.map(({ region, ranges }) =>
          uffd.prefetchSettled(region, ranges, { chunkPages: 64 }).then((result) => {
            restore.replayed += result.mapped
            if (result.error) throw result.error
          }),
        )
        await settledAll(replays)
      }
      // A recording restore runs on demand (unless told): what the background prefetch maps first
      // would be missing from its working set.
      const prefetch = this.#options.prefetch ?? restore.recorder === undefined
      if (prefetch && !uffd.closed) {
        // One native task for every region (a VM may have thousands): what it mapped counts even
        // if the VM exits midway.
        const result = await uffd.prefetchRegions(regions, { chunkPages: 512 })
        restore.prefetched += result.mapped
        if (result.error) throw result.error
      }
    } catch (error) {
      // The VM exiting midway closes the userfaultfd: that is not a failure to serve it.
      if (!uffd.closed) this.#kill(restore, `prefetch failed: ${(error as Error).message}`)
    }
  }

  #kill(restore: Restore, reason: string): void {
    if (restore.outcome !== 'running') return
    const why = this.#named(reason)
    restore.error = why
    const { peer, uffd } = restore.adoption
    const { outcome, what } = stop(restore.process)
    restore.outcome = outcome
    this.#report(new UffdError(`cannot serve the VM${peer ? ` (pid ${peer.pid})` : ''}: ${why}; ${what}`, { code: 'ERR_UFFD_PEER_KILLED' }))
    uffd.close()
  }

  #ended(restore: Restore): void {
    if (restore.endedAt !== undefined) return
    restore.endedAt = Date.now()
    restore.process?.close()
    if (restore.outcome === 'running') restore.outcome = 'served'
    // The summary counts what the replay and the prefetch mapped: they end soon after the
    // userfaultfd closes (a VM that exits while they run), and their counts come in as they do.
    void restore.filled.then(() => this.#finish(restore))
  }

  /** Whether a restore records its working set. A resumed one does not: it saw only the end. */
  #records(resumed: boolean): boolean {
    if (resumed) return false
    return this.#options.record !== undefined || (this.#workingSet !== undefined && this.#workingSet.trace === undefined)
  }

  #finish(restore: Restore): void {
    if (!this.#restores.delete(restore)) return
    const summary = this.#summary(restore)
    if (this.#workingSet && restore.recorder && restore.outcome === 'served') {
      this.#workingSet.save(pageSizeOf(restore.adoption.regions), restore.recorder.offsets(), (path, pages) =>
        this.emit('trace', { path, pages }),
      )
    }
    if (restore.recorder && this.#options.record) {
      try {
        const memory = this.#traced()
        writeTrace(this.#options.record, memory, pageSizeOf(restore.adoption.regions), restore.recorder.offsets())
      } catch (error) {
        this.#report(
          new UffdError(`writing the trace ${this.#options.record} failed: ${(error as Error).message}`, { code: 'EIO', cause: error }),
        )
      }
    }
    this.emit('summary', summary)
    this.#closeIfDone()
  }

  #summary(restore: Restore): VmSummary {
    const { uffd, regions, peer } = restore.adoption
    const stats = uffd.stats
    const latency = uffd.latency()
    const page = pageSizeOf(regions)
    return {
      pid: peer?.pid,
      outcome: restore.outcome,
      ...(restore.error ? { error: restore.error } : {}),
      regions: regions.length,
      faults: stats.faults.missing + stats.faults.minor + stats.faults.wp,
      pagesMapped: Math.round(stats.bytesMapped / page),
      bytesMapped: stats.bytesMapped,
      holes: stats.holes,
      // Microseconds are what a first fault's time can tell; more digits are float noise in the JSON line.
      firstFaultMs: latency.firstFaultMs === undefined ? undefined : Math.round(latency.firstFaultMs * 1000) / 1000,
      faultP50Micros: latency.p50Micros,
      faultP99Micros: latency.p99Micros,
      replayedPages: Math.round(restore.replayed / page),
      prefetchedPages: Math.round(restore.prefetched / page),
      durationMs: (restore.endedAt ?? Date.now()) - restore.started,
      ...(restore.resumed ? { resumed: true as const } : {}),
      ...this.#storeSince(restore.storeAtStart),
    }
  }

  /** What the memory's store did since `before` (when a VM connected). */
  #storeSince(before: ObjectSourceStats | undefined): { store?: VmStoreCounts } {
    const now = this.#memory?.objectStats
    if (!before || !now) return {}
    const since = (name: keyof VmStoreCounts) => now[name] - before[name]
    return {
      store: {
        requests: since('requests'),
        bytesFetched: since('bytesFetched'),
        retries: since('retries'),
        failures: since('failures'),
        memoryHits: since('memoryHits'),
        diskHits: since('diskHits'),
        fallbackPages: since('fallbackPages'),
      },
    }
  }

  #closeIfDone(): void {
    if (this.#accepting || this.#restores.size > 0 || this.#closed) return
    this.#closed = true
    const closed = () => {
      this.#keeper?.close()
      this.#release()
      this.emit('close')
    }
    // A trace being stored beside the memory is stored before 'close' (a process may exit then).
    if (this.#workingSet?.saving) void this.#workingSet.settled().then(closed)
    else closed()
  }

  #report(error: UffdError): void {
    if (this.listenerCount('error') > 0) this.emit('error', error)
    else process.emitWarning(error)
  }
}

/** A memory file opened once: its path, the fd held, and the path that reads that fd. */
interface HeldFile {
  readonly path: string
  readonly fd: number
  readonly proc: string
}

/** Opens a memory file and checks that it can serve: a readable, non-empty regular file. */
/**
 * Checks the local layers given above a memory in a store as the memory files are checked: a
 * missing, unreadable or empty file, or a folder, is an error before any VM waits on it.
 * @internal
 */
export function checkMemoryFiles(paths: readonly string[]): void {
  for (const path of paths) closeSync(holdMemoryFile(path).fd)
}

function holdMemoryFile(path: string): HeldFile {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (cause) {
    const { code, message } = cause as NodeJS.ErrnoException
    throw new UffdError(`the memory file ${path} cannot be opened: ${message}`, { code: (code ?? 'EIO') as 'EIO', cause })
  }
  try {
    const stat = fstatSync(fd)
    if (stat.isDirectory()) throw new UffdError(`the memory file ${path} is a directory, not a file`, { code: 'EISDIR' })
    if (!stat.isFile()) throw new UffdError(`the memory file ${path} is not a regular file`, { code: 'EINVAL' })
    if (stat.size === 0)
      throw new UffdError(
        `the memory file ${path} is empty: it is not a snapshot's memory (a full snapshot's, or a diff snapshot's, which is as long as the memory and sparse): give the file Firecracker wrote as mem_file_path`,
        { code: 'EINVAL' },
      )
    try {
      readSync(fd, Buffer.alloc(1), 0, 1, 0)
    } catch (cause) {
      const { code, message } = cause as NodeJS.ErrnoException
      throw new UffdError(`the memory file ${path} cannot be read: ${message}`, { code: (code ?? 'EIO') as 'EIO', cause })
    }
  } catch (error) {
    closeSync(fd)
    throw error
  }
  return { path, fd, proc: `/proc/self/fd/${fd}` }
}

/**
 * Stops a VM that cannot be served, by its pidfd: a kill reaches this VM or nothing, never a
 * process given its pid since. Never throws: a kill refused (EPERM, a VM jailed as another user)
 * or a process not held is said, for the VM's owner to stop it.
 */
function stop(process: PeerProcess | undefined): { outcome: VmSummary['outcome']; what: string } {
  if (!process) return { outcome: 'abandoned', what: 'its process could not be held (no pidfd): stop it yourself' }
  try {
    return process.signal('SIGKILL') === 'sent'
      ? { outcome: 'killed', what: 'it was killed' }
      : { outcome: 'exited', what: 'it had exited already' }
  } catch (error) {
    return { outcome: 'abandoned', what: `it could not be killed (${(error as Error).message}): stop it yourself` }
  }
}

/** The keeper's options are a path and a whole number of milliseconds. */
function checkKeeper(path: unknown, graceMs: unknown): void {
  if (path !== undefined && (typeof path !== 'string' || path === '')) throw argumentError('options.keeper', 'a socket path', path)
  if (typeof path === 'string') {
    // Said now, before the server listens: the keeper is linked to (or started) after.
    const folder = statSync(dirname(path), { throwIfNoEntry: false })
    if (!folder?.isDirectory()) {
      throw new UffdError(`the keeper's socket ${path} cannot be made: ${dirname(path)} is not a folder that exists`, {
        code: folder ? 'ENOTDIR' : 'ENOENT',
      })
    }
  }
  if (graceMs === undefined) return
  if (typeof graceMs !== 'number' || !Number.isSafeInteger(graceMs))
    throw argumentError('options.keeperGraceMs', 'a whole number of milliseconds', graceMs)
  if (graceMs < 1 || graceMs > 2 ** 31 - 1) throw rangeError('options.keeperGraceMs', 'from 1 to 2147483647', graceMs)
}

/** The mode and owner of the socket file, from the options. */
function socketFileOptions(
  mode: FirecrackerOptions['socketMode'],
  owner: FirecrackerOptions['socketOwner'],
): { mode?: number; owner?: SocketOwner } {
  const result: { mode?: number; owner?: SocketOwner } = {}
  if (typeof mode === 'string') {
    if (!/^[0-7]{1,4}$/.test(mode)) throw argumentError('options.socketMode', 'an octal mode such as 660', mode)
    result.mode = Number.parseInt(mode, 8)
  } else if (mode !== undefined) {
    result.mode = mode
  }
  if (typeof owner === 'string') {
    const [user, group] = owner.split(':')
    result.owner = {
      ...(user ? { uid: idOf(user, '/etc/passwd', 'user') } : {}),
      ...(group ? { gid: idOf(group, '/etc/group', 'group') } : {}),
    }
  } else if (owner !== undefined) {
    result.owner = owner
  }
  return result
}

/** A user's or group's id: a number, or a name looked up in `table` (/etc/passwd, /etc/group). */
function idOf(name: string, table: string, what: string): number {
  if (/^\d+$/.test(name)) return Number(name)
  let lines: string[] = []
  try {
    lines = readFileSync(table, 'utf8').split('\n')
  } catch {}
  const entry = lines.map((line) => line.split(':')).find((fields) => fields[0] === name)
  const id = Number(entry?.[2])
  if (!entry || !Number.isSafeInteger(id)) {
    throw new UffdError(`no ${what} named ${name} in ${table} (give a numeric id where names come from elsewhere)`, { code: 'EINVAL' })
  }
  return id
}

/** A trace can be written at `path` when a VM exits: its folder is there and writable, and it is not a folder. */

/** The VMs' page size (every region of a VM has the same). */
function pageSizeOf(regions: readonly Region[]): number {
  return regions[0]?.pageSize ?? 4096
}

/** Where each traced page lies: per region, its ranges in the trace's order (runs of pages coalesced). */
export function replayPlan(
  trace: WorkingSetTrace,
  regions: readonly Region[],
  offsets: readonly number[],
): Array<{ region: Region; ranges: Array<{ offset: number; length: number }> }> {
  const plan = regions.map((region) => ({ region, ranges: [] as Array<{ offset: number; length: number }> }))
  for (const pageNumber of trace.pages) {
    const fileOffset = pageNumber * trace.pageSize
    const i = regions.findIndex((region, j) => fileOffset >= (offsets[j] ?? 0) && fileOffset < (offsets[j] ?? 0) + region.size)
    const entry = plan[i]
    if (!entry || trace.pageSize % entry.region.pageSize !== 0) continue
    const offset = fileOffset - (offsets[i] ?? 0)
    const last = entry.ranges[entry.ranges.length - 1]
    if (last && last.offset + last.length === offset) last.length += trace.pageSize
    else entry.ranges.push({ offset, length: trace.pageSize })
  }
  return plan.filter((entry) => entry.ranges.length > 0)
}

/** Starts serving Firecracker restores on `options.socket`; see {@link FirecrackerServer}. */
export function serveFirecracker(options: FirecrackerOptions): FirecrackerServer {
  return new FirecrackerServer(options)
}

/** Waits for every promise to settle; the first rejection, if any, is thrown once all have. */
async function settledAll(promises: Promise<void>[]): Promise<void> {
  const failed = (await Promise.allSettled(promises)).find((result) => result.status === 'rejected')
  if (failed) throw failed.reason
}
