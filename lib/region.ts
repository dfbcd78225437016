// Region: memory a userfaultfd can serve, and the zero-copy ArrayBuffer over it.

import { constants } from 'node:buffer'
import { markAsUntransferable } from 'node:worker_threads'
import type { BindingRegion } from './binding'
import { argumentError, call } from './errors'
import { binding } from './loader'
import { integer, optionalBoolean, optionalInteger, options as optionsOf, regionSize } from './validate'

/** The kind of memory behind a region. */
export type MemoryKind = 'anonymous' | 'shmem' | 'hugetlb' | 'remote'

// The most bytes one ArrayBuffer holds in this runtime (4 GiB on Node.js 20 and Bun).
const MAX_BUFFER_BYTES: number = constants.MAX_LENGTH

/** What `region.share()` returns: post it to a worker and `Region.attach` it there. */
export interface SharedRegion {
  /** Always `'userfaultfd.region'`: marks the token as a region's. */
  readonly type: 'userfaultfd.region'
  /** The region's id in this process's registry of live regions. */
  readonly id: number
}

/** Options of {@link Region.shmem}. */
export interface ShmemOptions {
  /** The memfd's name, shown in /proc/PID/maps. Default `'userfaultfd'`. */
  name?: string
  /**
   * Map the file MAP_PRIVATE (the kernel's "shmem private" and "hugetlb private" memory types):
   * pages written or COPYed into the region are its own and the file stays as it was; minor
   * faults still map the file's pages. Default `false` (MAP_SHARED).
   */
  private?: boolean
}

/** Options of {@link Region.hugetlb}. */
export interface HugetlbOptions extends ShmemOptions {
  /** The huge page size in bytes: 2 MiB (default) or 1 GiB. */
  pageSize?: number
}

const TWO_MIB = 2 * 1024 * 1024

// Region objects of this thread by id, so that a fault names the same object the program holds.
// An entry goes with its region's close(); entries of regions collected unclosed are swept out
// whenever the map has doubled since the last sweep. (A FinalizationRegistry would do it one by
// one, but it keeps every region alive until a full collection: mappings then pile up.)
const byId = new Map<number, WeakRef<Region>>()
let sweepAt = 256

function remember(id: number, region: Region): void {
  // The first live object of a region in this thread stays the one its faults name.
  if (byId.get(id)?.deref()) return
  byId.set(id, new WeakRef(region))
  if (byId.size < sweepAt) return
  for (const [key, ref] of byId) if (ref.deref() === undefined) byId.delete(key)
  sweepAt = Math.max(256, 2 * byId.size)
}

// The ArrayBuffers a region hands out are the mapping itself: transferring one to a worker would
// copy the whole region (faulting in every page) where the runtime ignores the mark (Node.js 20),
// and throws a DataCloneError where it honours it. Node.js 24 and later keep the mark as a detach
// key that napi_detach_arraybuffer cannot pass (detaching a marked buffer aborts the process), so
// there the buffers are left unmarked and close() still detaches them: those runtimes refuse to
// transfer an external ArrayBuffer anyway (DataCloneError). Share regions instead.
const markKeepsDetach: boolean = (() => {
  const probe = new ArrayBuffer(1) as ArrayBuffer & { transfer?: () => ArrayBuffer }
  markAsUntransferable(probe)
  try {
    probe.transfer?.()
    return true
  } catch {
    return false
  }
})()

function untransferable(buffer: ArrayBuffer): ArrayBuffer {
  if (markKeepsDetach) markAsUntransferable(buffer)
  return buffer
}

/**
 * A memory mapping that a {@link Userfaultfd} can register: anonymous, memfd shmem or hugetlbfs.
 *
 * `buffer` is an ArrayBuffer over the mapping itself: reading it where a page is missing takes a
 * page fault. A region larger than one ArrayBuffer holds ({@link Region.maxBufferBytes}) is read in
 * parts with `bytes(offset, length)`. `close()` detaches every ArrayBuffer the region handed out in
 * this thread and ends the region; while views of it opened with `Region.attach` (in other threads)
 * are open, the region stays mapped and registered until the last of them closes, so that no view
 * reads zeros because its owner closed first. To use a region in a worker, post `region.share()`
 * and `Region.attach()` it there: its ArrayBuffers cannot be transferred.
 *
 * @example
 * ```ts
 * using region = Region.anonymous(64 * 1024 * 1024)
 * uffd.register(region)
 * ```
 */
export class Region {
  readonly #binding: BindingRegion
  #buffer: ArrayBuffer | undefined
  // Buffers over parts of a region too large for one, held weakly so that the ones the program
  // dropped are collected; close() detaches those still alive.
  #parts: WeakRef<ArrayBuffer>[] = []
  #sweepPartsAt = 64
  // What never changes, read once: handlers read them on every fault.
  readonly #id: number
  readonly #size: number
  readonly #pageSize: number
  readonly #address: bigint

  private constructor(handle: BindingRegion) {
    this.#binding = handle
    this.#id = handle.id
    this.#size = handle.size
    this.#pageSize = handle.pageSize
    this.#address = handle.address
    remember(handle.id, this)
  }

  /** A private anonymous mapping of `size` bytes (rounded up to pages); nothing is resident. */
  static anonymous(size: number): Region {
    regionSize('size', size)
    return new Region(call(() => binding.BindingRegion.anonymous(size)))
  }

  /** A memfd of `size` bytes, mapped shared. {@link Region.alias} maps the same file again. */
  static shmem(size: number, options?: ShmemOptions): Region {
    regionSize('size', size)
    const { name = 'userfaultfd', private: isPrivate } = optionsOf('options', options)
    const priv = optionalBoolean('options.private', isPrivate, false)
    return new Region(call(() => binding.BindingRegion.shmem(size, String(name), priv)))
  }

  /**
   * A hugetlbfs memfd of `size` bytes (rounded up to huge pages), mapped shared. Throws ENOMEM
   * with the command to run when not enough huge pages are reserved (`sysctl vm.nr_hugepages`).
   */
  static hugetlb(size: number, options?: HugetlbOptions): Region {
    regionSize('size', size)
    const { name = 'userfaultfd', pageSize = TWO_MIB, private: isPrivate } = optionsOf('options', options)
    integer('options.pageSize', pageSize)
    const priv = optionalBoolean('options.private', isPrivate, false)
    return new Region(call(() => binding.BindingRegion.hugetlb(size, pageSize, String(name), priv)))
  }

  /**
   * A view of a region shared with `region.share()`, in any thread (the owner's too): it does not
   * own the mapping (`owner` is false), and its `close()` lets go of the view's buffers. An open
   * view keeps the region in use: if the owner closes the region first, the region stays mapped
   * and registered until the view closes (or is collected, or its thread ends). Throws EINVAL once
   * the owner has closed the region.
   */
  static attach(shared: SharedRegion): Region {
    if (typeof shared !== 'object' || shared === null || shared.type !== 'userfaultfd.region') {
      throw argumentError('shared', 'the result of region.share()', shared)
    }
    const id = integer('shared.id', shared.id)
    return new Region(call(() => binding.BindingRegion.attach(id)))
  }

  /**
   * The most bytes one ArrayBuffer holds in this runtime (4 GiB on Node.js 20 and Bun): the
   * largest `region.buffer`, and the most `region.bytes()` gives at once.
   */
  static get maxBufferBytes(): number {
    return MAX_BUFFER_BYTES
  }

  /** @internal A Region over a binding handle made elsewhere in the package (an adoption). */
  static fromBinding(handle: BindingRegion): Region {
    return new Region(handle)
  }

  /** @internal The Region object of this thread for a region id, attaching a view if needed. */
  static fromId(id: number): Region {
    // No closed check here: it is on every fault's path, and a closed region's faults were woken
    // when it closed; a call on a closed region throws EBADF anyway.
    const known = byId.get(id)?.deref()
    if (known) return known
    return new Region(call(() => binding.BindingRegion.named(id)))
  }

  /** @internal */
  get binding(): BindingRegion {
    return this.#binding
  }

  /**
   * A second mapping of the same file (shmem and hugetlb only), not registered: write through it
   * to fill the page cache that minor faults of this region then map with CONTINUE.
   */
  alias(): Region {
    return new Region(call(() => this.#binding.alias()))
  }

  /** The id that names this region in this process. */
  get id(): number {
    return this.#id
  }
  /** Size in bytes, a multiple of `pageSize`. */
  get size(): number {
    return this.#size
  }
  /** The page size of the memory: 4096, or the huge page size. */
  get pageSize(): number {
    return this.#pageSize
  }
  /** The kind of memory: `'anonymous'`, `'shmem'`, `'hugetlb'`, or `'remote'` (another process's, no buffer). */
  get kind(): MemoryKind {
    return this.#binding.kind as MemoryKind
  }
  /** Whether the mapping is MAP_PRIVATE: always for anonymous memory, on request for shmem and hugetlb. */
  get private(): boolean {
    return this.#binding.private
  }
  /** The mapping's start address, for diagnostics; no call takes an address. */
  get address(): bigint {
    return this.#address
  }
  /** Whether this object made the mapping (false for a view from `attach`). */
  get owner(): boolean {
    return this.#binding.owner
  }
  /** Whether the region is closed, by `close()` here or, for a view, by its owner; a closed region refuses further use. */
  get closed(): boolean {
    return this.#binding.closed
  }

  /**
   * An ArrayBuffer over the whole mapping, without copying. Detached by `close()`; it cannot be
   * transferred (share the region instead). A region larger than one ArrayBuffer holds
   * ({@link Region.maxBufferBytes}) has none: this throws a UffdError `ERANGE`; use `bytes()`.
   */
  get buffer(): ArrayBuffer {
    this.#buffer ??= untransferable(call(() => this.#binding.buffer(MAX_BUFFER_BYTES)))
    return this.#buffer
  }

  // The whole buffer for bytes(): made by the same call, so that its errors name bytes().
  #wholeForBytes(): ArrayBuffer {
    this.#buffer ??= untransferable(call(() => this.#binding.bytes(0, this.#size, MAX_BUFFER_BYTES)))
    return this.#buffer
  }

  /**
   * A Uint8Array over `length` bytes of the mapping from `offset` on (any alignment), without
   * copying. It works at any offset of any region, even one larger than one ArrayBuffer holds:
   * `length` is then at most {@link Region.maxBufferBytes}, and by default the rest of the region up to
   * that much. Detached by `close()`.
   *
   * @example
   * ```ts
   * const region = Region.anonymous(8 * 2 ** 30)        // 8 GiB: too large for region.buffer
   * region.bytes(6 * 2 ** 30, 4096)[0] = 1              // a page at 6 GiB
   * ```
   *
   * @throws TypeError `ERR_INVALID_ARG_TYPE` if `offset` or `length` is not a number; RangeError
   * `ERR_OUT_OF_RANGE` if it is not an integer from 0 to 2^53 - 1 or the range runs past the end;
   * UffdError `ERANGE` if `length` is more than one ArrayBuffer holds, `EBADF` if the region is closed.
   */
  bytes(offset = 0, length?: number): Uint8Array {
    integer('offset', offset)
    const size = this.#size
    const want = optionalInteger('length', length) ?? Math.max(0, Math.min(size - offset, MAX_BUFFER_BYTES))
    if (size <= MAX_BUFFER_BYTES && offset + want <= size) return new Uint8Array(this.#wholeForBytes(), offset, want)
    // A part of a region too large for one buffer, or a range the core refuses (EINVAL).
    const part = untransferable(call(() => this.#binding.bytes(offset, want, MAX_BUFFER_BYTES)))
    this.#keepPart(part)
    return new Uint8Array(part)
  }

  #keepPart(part: ArrayBuffer): void {
    this.#parts.push(new WeakRef(part))
    if (this.#parts.length < this.#sweepPartsAt) return
    this.#parts = this.#parts.filter((ref) => ref.deref() !== undefined)
    this.#sweepPartsAt = Math.max(64, 2 * this.#parts.length)
  }

  /**
   * Drops the pages of a range (MADV_DONTNEED, or MADV_REMOVE for shmem and hugetlb): touching them
   * again is a missing fault where the range is registered. With the `EVENT_REMOVE` feature the
   * userfaultfd emits a `'remove'` event. Offset and length are multiples of `pageSize`.
   */
  discard(offset: number, length: number): void {
    call(() => this.#binding.discard(integer('offset', offset), integer('length', length)))
  }

  /**
   * A token to post to a worker thread, where `Region.attach(token)` gives a view. Throws EBADF if
   * the region is closed.
   */
  share(): SharedRegion {
    return { type: 'userfaultfd.region', id: call(() => this.#binding.share()) }
  }

  /**
   * Ends the region: detaches every ArrayBuffer it handed out in this thread (`buffer` and the
   * parts from `bytes()`), unregisters it from every userfaultfd (waking any thread waiting in it)
   * and refuses further use. While views opened with `Region.attach` are open (in other threads),
   * the unregistering waits for the last of them to close; this object is closed at once. A view
   * lets go of its buffers and of the region.
   */
  close(): void {
    if (this.#buffer) {
      binding.detachBuffer(this.#buffer)
      this.#buffer = undefined
    }
    for (const ref of this.#parts) {
      const part = ref.deref()
      if (part && part.byteLength > 0) binding.detachBuffer(part)
    }
    this.#parts = []
    this.#binding.close()
    if (byId.get(this.id)?.deref() === this) byId.delete(this.id)
  }

  /** Calls `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close()
  }
}

/** @internal The binding handle of a Region argument, or a TypeError. */
export function bindingRegionOf(region: unknown, name = 'region'): BindingRegion {
  if (!(region instanceof Region)) throw argumentError(name, 'a Region', region)
  return region.binding
}
