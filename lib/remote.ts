// Serving another process's memory: adopt a userfaultfd it created and registered, from an fd
// this process holds or over a Unix socket in Firecracker's handshake. Built on the façade, which
// makes the adopted Userfaultfd; nothing below imports this module.
import type { NativeOutcome } from './binding'
import { argumentError, call, fromFailure, UffdError } from './errors'
import { native } from './loader'
import { type AdoptFdOptions, type AdoptOptions, nativeOptionsOf } from './options'
import { type Adoption, Userfaultfd } from './userfaultfd'
import { integer } from './validate'

export type { AdoptOptions, RemoteRange } from './options'
export type { Adoption, Peer } from './userfaultfd'

function settle(outcome: NativeOutcome): Adoption {
  const adoption = outcome.takeAdoption()
  if (adoption) return Userfaultfd.fromAdoption(adoption)
  const failure = outcome.takeError()
  if (failure) throw fromFailure(failure)
  throw new UffdError('the handshake failed', { code: 'EPROTO' })
}

/**
 * Serves a userfaultfd that another process created and registered, which this process holds as
 * `fd` (it is duplicated: `fd` stays the caller's). `ranges` are the ranges it registered.
 */
export function adoptFd(fd: number, options: AdoptFdOptions): Adoption {
  return Userfaultfd.fromFd(fd, options)
}

/**
 * A Unix socket that takes userfaultfds in Firecracker's handshake: the peer connects and sends a
 * JSON array of `{ base_host_virt_addr, size, offset, page_size }` with the uffd as SCM_RIGHTS.
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
  constructor(path: string, options?: AdoptOptions) {
    if (typeof path !== 'string') throw argumentError('path', 'a string', path)
    this.#native = call(() => native.NativeListener.listen(path, nativeOptionsOf(options, 'adopt')))
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
  return new HandshakeListener(path, options)
}

/** Receives one handshake on a connected Unix socket this process holds as `fd` (duplicated). */
export async function receive(fd: number, options?: AdoptOptions): Promise<Adoption> {
  const task = call(() => native.receiveFd(integer('fd', fd), nativeOptionsOf(options, 'adopt')))
  return settle(await task)
}
