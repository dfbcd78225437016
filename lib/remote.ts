// Serving another process's memory: adopt a userfaultfd it created and registered, from an fd
// this process holds or over a Unix socket in Firecracker's handshake.
import type { NativeAdoption, NativeOutcome } from './binding'
import { argumentError, call, fromFailure, UffdError } from './errors'
import { native } from './loader'
import { Region } from './region'
import { Userfaultfd, type UserfaultfdOptions } from './userfaultfd'
import { integer, options as optionsOf } from './validate'

/** A registered range of the other process's memory. */
export interface RemoteRange {
  /** Start address in the other process. */
  address: bigint | number
  /** Length in bytes, a multiple of `pageSize`. */
  length: number
  /** 4096, or the huge page size. */
  pageSize: number
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

function nativeOptions(options: AdoptOptions | undefined) {
  const { features, fallback = 'sigbus', timeoutMs, spinMicros } = optionsOf('options', options)
  return {
    features: features?.map(String),
    fallback,
    timeoutMs: timeoutMs === 0 ? undefined : (timeoutMs ?? 30_000),
    spinMicros: spinMicros === undefined ? undefined : integer('options.spinMicros', spinMicros),
  }
}

/** @internal The public face of a native adoption. */
export function fromAdoption(adoption: NativeAdoption): Adoption {
  const handle = adoption.takeUffd()
  if (!handle) throw new UffdError('the adoption was already taken', { code: 'EINVAL' })
  const pid = adoption.peerPid
  const uffd = Userfaultfd.fromNative(handle)
  // While its peer is connected, serving it is what keeps this process up (closed when it hangs up).
  if (pid != null) uffd.ref()
  return {
    uffd,
    regions: adoption.takeRegions().map((region) => Region.fromNative(region)),
    offsets: adoption.offsets,
    peer: pid == null ? undefined : { pid, uid: adoption.peerUid ?? -1, gid: adoption.peerGid ?? -1 },
  }
}

function settle(outcome: NativeOutcome): Adoption {
  const adoption = outcome.takeAdoption()
  if (adoption) return fromAdoption(adoption)
  const failure = outcome.takeError()
  if (failure) throw fromFailure(failure)
  throw new UffdError('the handshake failed', { code: 'EPROTO' })
}

/**
 * Serves a userfaultfd that another process created and registered, which this process holds as
 * `fd` (it is duplicated: `fd` stays the caller's). `ranges` are the ranges it registered.
 */
export function adoptFd(fd: number, options: AdoptOptions & { ranges: RemoteRange[] }): Adoption {
  const { ranges } = optionsOf('options', options)
  if (!Array.isArray(ranges)) throw argumentError('options.ranges', 'an array of { address, length, pageSize }', ranges)
  const nativeRanges = ranges.map((range, i) => {
    const address = typeof range?.address === 'bigint' ? Number(range.address) : range?.address
    return {
      address: integer(`options.ranges[${i}].address`, address),
      length: integer(`options.ranges[${i}].length`, range.length),
      pageSize: integer(`options.ranges[${i}].pageSize`, range.pageSize),
    }
  })
  return fromAdoption(call(() => native.adoptFd(integer('fd', fd), nativeRanges, nativeOptions(options))))
}

/**
 * A Unix socket that takes userfaultfds in Firecracker's handshake: the peer connects and sends a
 * JSON array of `{ base_host_virt_addr, size, offset, page_size, page_size_kib }` with the uffd as
 * SCM_RIGHTS. Both page-size fields are bytes, as every Firecracker release sends them: `page_size`
 * wins, else `page_size_kib`, else (Firecracker 1.0 to 1.6) the base page size; other fields are
 * ignored.
 *
 * @example
 * ```ts
 * const listener = listen('/tmp/uffd.sock')
 * const { uffd, regions, offsets } = await listener.accept()
 * uffd.handle((fault) => fault.copy(snapshotPage(offsets[regions.indexOf(fault.region)] + fault.offset)))
 * ```
 */
export class HandshakeListener {
  readonly #native: ReturnType<typeof native.NativeListener.listen>

  /** @internal */
  private constructor(path: string, options?: AdoptOptions) {
    if (typeof path !== 'string') throw argumentError('path', 'a string', path)
    this.#native = call(() => native.NativeListener.listen(path, nativeOptions(options)))
  }

  /** @internal Use {@link listen}. */
  static open(path: string, options?: AdoptOptions): HandshakeListener {
    return new HandshakeListener(path, options)
  }

  /**
   * Accepts the next connection and receives its handshake. The userfaultfd closes itself when
   * the peer hangs up (an `'error'` event `ERR_UFFD_PEER_GONE` says so).
   */
  async accept(): Promise<Adoption> {
    return settle(await this.#native.accept())
  }

  /** Stops listening; a pending `accept()` rejects. */
  close(): void {
    this.#native.close()
  }

  /** Calls `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close()
  }
}

/** Listens for handshakes on a Unix socket at `path` (a stale socket file there is replaced). */
export function listen(path: string, options?: AdoptOptions): HandshakeListener {
  return HandshakeListener.open(path, options)
}

/** Receives one handshake on a connected Unix socket this process holds as `fd` (duplicated). */
export async function receive(fd: number, options?: AdoptOptions): Promise<Adoption> {
  const task = call(() => native.receiveFd(integer('fd', fd), nativeOptions(options)))
  return settle(await task)
}
