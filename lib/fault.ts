// Fault: one page fault handed to a handler, and the calls that resolve it.
import { argumentError, call } from './errors'
import { binding } from './loader'
import {
  type ContinueOptions,
  DEFAULTS,
  type FaultRangeOptions,
  holesOf,
  type MapOptions,
  type MoveOptions,
  protectOf,
  type WakeOptions,
  wakeOf,
} from './options'
import { bindingRegionOf, type Region } from './region'
import { Source } from './source'
import { bytesOf, integer, optionalBoolean, optionalInteger, options as optionsOf } from './validate'

/** Why the thread stopped: a missing page, a minor fault (page in cache, not mapped), a write to a protected page. */
export type FaultKind = 'missing' | 'minor' | 'wp'

const KINDS: readonly FaultKind[] = ['missing', 'minor', 'wp']

/** @internal Numbers per fault in a batch (the binding's). */
export const FAULT_FIELDS: number = binding.FAULT_FIELDS

/**
 * A page fault waiting in the kernel. Resolve it once with `copy`, `zero`, `continue` or `poison`;
 * a handler that returns (or settles its promise) without doing so gets the userfaultfd's fallback.
 */
export class Fault {
  readonly #uffdId: number
  readonly #id: number
  #woken = false

  /** The region the fault is in (a view in a worker thread). */
  readonly region: Region
  /** Offset of the faulting page in the region (page-aligned). */
  readonly offset: number
  /** Why the thread stopped, from `pagefault.flags`: `'minor'`, `'wp'`, else `'missing'`. */
  readonly kind: FaultKind
  /** Whether the access was a write. */
  readonly write: boolean
  /** The kernel thread id of the faulting thread. */
  readonly threadId: number
  readonly #address: number

  // From a batch (see lib/dispatch.ts): the fault at `at` of `batch`, whose fields are id, region
  // id, offset, address less the region's start, kind (0 missing, 1 minor, 2 wp), write, thread
  // id. Every call that resolves it is a binding function keyed by the userfaultfd's id and the
  // fault's. (Not tagged internal: a stripped constructor would leave the class a public one in the .d.ts.)
  private constructor(uffdId: number, region: Region, batch: Float64Array, at: number) {
    this.#uffdId = uffdId
    this.#id = batch[at] as number
    this.region = region
    this.offset = batch[at + 2] as number
    this.#address = batch[at + 3] as number
    this.kind = KINDS[batch[at + 4] as number] ?? 'missing'
    this.write = batch[at + 5] === 1
    this.threadId = batch[at + 6] as number
  }

  /** @internal The fault at `at` of a packed batch (see the constructor). */
  static fromBatch(uffdId: number, region: Region, packed: Float64Array, at: number): Fault {
    return new Fault(uffdId, region, packed, at)
  }

  /** The faulting address itself. */
  get address(): bigint {
    return this.region.address + BigInt(this.#address)
  }

  /** @internal */
  get id(): number {
    return this.#id
  }

  /** Whether the fault was resolved and its thread woken. */
  get resolved(): boolean {
    return this.#woken
  }

  /**
   * UFFDIO_COPY at the fault's page: `bytes` (a multiple of the page size) may span several pages
   * (readahead) and are clipped to the region. Returns the bytes mapped (0 if another resolver won).
   */
  copy(bytes: ArrayBufferView | ArrayBuffer, options?: MapOptions): number {
    const data = bytesOf('bytes', bytes)
    const { wake, writeProtect } = optionsOf('options', options)
    const wakes = optionalBoolean('options.wake', wake, DEFAULTS.wake)
    const protect = optionalBoolean('options.writeProtect', writeProtect, DEFAULTS.writeProtect)
    return this.#settle(wakes, () => binding.resolveCopy(this.#uffdId, this.#id, data, wakes, protect))
  }

  /** UFFDIO_ZEROPAGE at the fault's page (not on hugetlbfs, which has no zero page). */
  zero(options?: FaultRangeOptions): number {
    const { length, wake } = this.#range(options)
    return this.#settle(wake, () => binding.resolveZero(this.#uffdId, this.#id, length, wake))
  }

  /** UFFDIO_CONTINUE at the fault's page: maps what the page cache holds (minor faults). */
  continue(options?: ContinueOptions): number {
    const { length, wake } = this.#range(options)
    const protect = protectOf(options)
    return this.#settle(wake, () => binding.resolveContinue(this.#uffdId, this.#id, length, wake, protect))
  }

  /** Lifts the write-protection of the fault's page (a `'wp'` fault) and wakes the writer. */
  unprotect(options?: WakeOptions): void {
    const wake = wakeOf(options)
    this.#settle(wake, () => binding.resolveUnprotect(this.#uffdId, this.#id, wake))
  }

  /**
   * UFFDIO_MOVE to the fault's page from `fromOffset` of another anonymous region: the pages move
   * without a copy and the source becomes empty. Returns the bytes moved.
   */
  move(from: Region, fromOffset: number, options?: MoveOptions): number {
    const { length, wake } = this.#range(options)
    const allowSourceHoles = holesOf(options)
    const source = bindingRegionOf(from)
    const at = integer('fromOffset', fromOffset)
    return this.#settle(wake, () => binding.resolveMove(this.#uffdId, this.#id, source, { fromOffset: at, length, wake, allowSourceHoles }))
  }

  /**
   * Resolves the fault from a {@link Source} in one native call: the source's bytes at the
   * fault's offset in the region (pread for a file, ZEROPAGE for zeros, CONTINUE for the page
   * cache). The handler decides, native code maps. Returns the bytes mapped; 0 if the fault was
   * already resolved. Past the end of a bytes or file source it maps zeros. Throws EINVAL if the
   * source does not serve this kind of fault (a wp fault; a minor fault for all but the page cache).
   */
  fromSource(source: Source): number {
    if (!(source instanceof Source)) throw argumentError('source', 'a Source', source)
    return this.#settle(true, () => binding.resolveFromSource(this.#uffdId, this.#id, source.binding))
  }

  /** UFFDIO_POISON at the fault's page: the faulting thread gets SIGBUS. */
  poison(): number {
    return this.#settle(true, () => binding.resolvePoison(this.#uffdId, this.#id))
  }

  /**
   * UFFDIO_WAKE at the fault's page, after a resolve with `{ wake: false }`. Such a fault sleeps
   * until this (or `uffd.wake()`) whether or not the handler has returned; past `timeoutMs` it is
   * woken with an `ERR_UFFD_NOT_WOKEN` error.
   */
  wake(): void {
    this.#settle(true, () => binding.resolveWake(this.#uffdId, this.#id))
  }

  /** The length (default one page) and the wake of a resolve from the fault's page on. */
  #range(options: FaultRangeOptions | undefined): { length: number; wake: boolean } {
    const { length, wake } = optionsOf('options', options)
    return {
      length: optionalInteger('options.length', length) ?? this.region.pageSize,
      wake: optionalBoolean('options.wake', wake, DEFAULTS.wake),
    }
  }

  #settle<T>(wake: boolean, resolve: () => T): T {
    const result = call(resolve)
    if (wake) this.#woken = true
    return result
  }

  /** @internal After the handler: the core applies the fallback or the missing wake, if needed. */
  finish(): 'done' | 'fell-back' | 'asleep' {
    if (this.#woken) return 'done'
    const outcome = call(() => binding.finishFault(this.#uffdId, this.#id))
    // Resolved with { wake: false }: its thread sleeps until wake() (or timeoutMs), handler returned or not.
    if (outcome !== 'asleep') this.#woken = true
    return outcome
  }
}
