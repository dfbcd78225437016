// Serving another process's memory: adopt a userfaultfd it created and registered, from an fd
// this process holds or over a Unix socket in Firecracker's handshake. Built on the façade, which
// makes the adopted Userfaultfd; nothing below imports this module.
import { chmodSync, chownSync, statSync, unlinkSync } from 'node:fs'
import { constants } from 'node:os'
import type { BindingCancel, BindingKeeper, BindingOutcome, BindingPeerProcess } from './binding'
import { AbortError, argumentError, call, fromFailure, rangeError, UffdError } from './errors'
import { closeAllOnExit } from './exit'
import { binding } from './loader'
import { type AcceptOptions, type AdoptFdOptions, type AdoptOptions, bindingOptionsOf, type ReceiveOptions } from './options'
import { type Adoption, Userfaultfd } from './userfaultfd'
import { integer, optionalInteger, optionalSignal, options as optionsOf } from './validate'

export type { AdoptOptions, RemoteRange } from './options'

/** The owner and group to give a socket file, by numeric id; either may be left out. */
export interface SocketOwner {
  /** The user id that owns the socket file. */
  uid?: number
  /** The group id of the socket file. */
  gid?: number
}

/** Options of {@link listen}: those of the adopted userfaultfds, and how long a connection may take to send its handshake. */
export interface ListenOptions extends AdoptOptions {
  /**
   * How long a connection may take, from its accept, to send its whole handshake before it is
   * dropped (`accept()` rejects with ETIMEDOUT, and the next `accept()` goes on with the others).
   * Every connection is read as its bytes come, so a silent one holds up no other. Default 10000.
   */
  handshakeTimeoutMs?: number
  /** The socket file's mode (`0o660` lets a group connect), set as it is made. Default: as the umask leaves it. */
  mode?: number
  /** The socket file's owner and group (a VM monitor jailed as another user connects as that user). Default: this process's. */
  owner?: SocketOwner
}

/** How long a connection may take to send its handshake unless `handshakeTimeoutMs` says. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000
export type { Adoption, Peer } from './userfaultfd'

/**
 * @internal The process at the other end of a handshake, held by a pidfd taken as it connected
 * (SO_PEERPIDFD, else pidfd_open of its SO_PEERCRED pid): a signal reaches it or nothing, never a
 * process that was given its pid since.
 */
export interface PeerProcess {
  readonly pid: number
  /** Sends `signal`: `'sent'`, or `'exited'` if the process had exited (nothing was sent). */
  signal(signal: NodeJS.Signals): 'sent' | 'exited'
  /** Whether the process has exited. */
  exited(): boolean
  /** Lets go of the pidfd. */
  close(): void
}

/** The peer processes of adoptions and of refused handshakes (their UffdErrors). */
const peerProcesses = new WeakMap<object, PeerProcess>()
/** Why an adoption could not be handed to its listener's keeper. */
const keeperErrors = new WeakMap<object, UffdError>()

/** @internal Why the VM of an adoption from `accept()` could not be handed to the keeper, if it could not. */
export function keeperErrorOf(adoption: object): UffdError | undefined {
  return keeperErrors.get(adoption)
}

/**
 * @internal The VMs a keeper held, adopted with `options`: each an adoption, or the error that
 * refused it (its peer process then kept with it, to stop it by).
 */
export function adoptHeld(keeper: BindingKeeper, options: AdoptOptions): Array<Adoption | UffdError> {
  return call(() => keeper.takeHeld(bindingOptionsOf(options, 'adopt'))).map((outcome) => {
    try {
      return settle(outcome)
    } catch (error) {
      return error instanceof UffdError ? error : new UffdError(String(error), { code: 'EPROTO', cause: error })
    }
  })
}

/** @internal The peer process of an adoption from `accept()`, or of a handshake it refused (the error), if it was alive when it connected. */
export function peerProcessOf(adoptionOrError: object): PeerProcess | undefined {
  return peerProcesses.get(adoptionOrError)
}

function peerProcess(handle: BindingPeerProcess): PeerProcess {
  return {
    pid: handle.pid,
    signal: (signal) => (call(() => handle.signal(constants.signals[signal])) ? 'sent' : 'exited'),
    exited: () => handle.exited(),
    close: () => handle.close(),
  }
}

function settle(outcome: BindingOutcome): Adoption {
  const adoption = outcome.takeAdoption()
  const handle = outcome.takePeerProcess()
  const process = handle ? peerProcess(handle) : undefined
  if (adoption) {
    const adopted = Userfaultfd.fromAdoption(adoption)
    if (process) {
      peerProcesses.set(adopted, process)
      // The pidfd goes with the userfaultfd, not at a garbage collection: a server that adopts
      // many would run out of fds first.
      adopted.uffd.once('close', () => process.close())
    }
    const kept = outcome.takeKeeperError()
    if (kept) keeperErrors.set(adopted, fromFailure(kept) as UffdError)
    return adopted
  }
  const failure = outcome.takeError()
  if (failure) {
    const error = fromFailure(failure)
    if (process) peerProcesses.set(error, process)
    throw error
  }
  throw new UffdError('the handshake failed', { code: 'EPROTO' })
}

/** Closes what a handshake brought that nobody waits for any longer (it came after an abort). */
function discard(outcome: BindingOutcome): void {
  outcome.takePeerProcess()?.close()
  const adoption = outcome.takeAdoption()
  if (!adoption) return
  adoption.takeUffd()?.close()
  for (const region of adoption.takeRegions()) region.close()
}

/**
 * The adoption of a pending handshake, or an AbortError as soon as `signal` aborts: `onAbort`
 * then stops the handshake, and one that completed meanwhile is closed.
 */
function adoptionOf(task: Promise<BindingOutcome>, signal: AbortSignal | undefined, onAbort: () => void): Promise<Adoption> {
  if (!signal) return task.then(settle)
  return new Promise<Adoption>((resolve, reject) => {
    let aborted = false
    const abort = () => {
      aborted = true
      onAbort()
      reject(new AbortError(signal))
    }
    signal.addEventListener('abort', abort, { once: true })
    task.then(
      (outcome) => {
        signal.removeEventListener('abort', abort)
        if (aborted) return discard(outcome)
        try {
          resolve(settle(outcome))
        } catch (error) {
          reject(error)
        }
      },
      (error: unknown) => {
        signal.removeEventListener('abort', abort)
        reject(error)
      },
    )
  })
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
  readonly #binding: ReturnType<typeof binding.BindingListener.listen>
  readonly #path: string
  /** The socket file this listener made (its inode), removed by `close()` if it is still there. */
  #socket: bigint | undefined

  // Made by listen(). (Not tagged internal: a stripped constructor would leave a public one in the .d.ts.)
  private constructor(pathOrFd: string | number, options?: ListenOptions) {
    if (typeof pathOrFd !== 'string' && typeof pathOrFd !== 'number') {
      throw argumentError('path', 'a path, or the fd of a listening socket', pathOrFd)
    }
    const { handshakeTimeoutMs, mode, owner, ...adopt } = optionsOf('options', options)
    const limit = integer('options.handshakeTimeoutMs', handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS)
    if (limit < 1 || limit > 2 ** 31 - 1) throw rangeError('options.handshakeTimeoutMs', 'from 1 to 2147483647', limit)
    if (typeof pathOrFd === 'number') {
      // A socket another process made and keeps (systemd): its file, mode and owner are that process's.
      if (mode !== undefined || owner !== undefined) {
        throw argumentError('options.mode', 'unset for a socket given as an fd (its maker sets them)', mode ?? owner)
      }
      const fd = integer('fd', pathOrFd)
      this.#binding = call(() => binding.BindingListener.fromFd(fd, bindingOptionsOf(adopt, 'adopt'), limit))
      this.#path = `fd ${fd}`
      return
    }
    const path = pathOrFd
    this.#binding = call(() => binding.BindingListener.listen(path, bindingOptionsOf(adopt, 'adopt'), limit))
    this.#path = path
    this.#socket = statSync(path, { bigint: true, throwIfNoEntry: false })?.ino
    try {
      if (mode !== undefined) chmodSync(path, integer('options.mode', mode))
      if (owner !== undefined) {
        const { uid, gid } = optionsOf('options.owner', owner)
        chownSync(path, optionalInteger('options.owner.uid', uid) ?? -1, optionalInteger('options.owner.gid', gid) ?? -1)
      }
    } catch (cause) {
      this.close()
      if (!(cause instanceof Error) || !('syscall' in cause)) throw cause
      const { code, message } = cause as NodeJS.ErrnoException
      throw new UffdError(`the socket ${path} cannot be given its mode or owner: ${message}`, { code: (code ?? 'EIO') as 'EIO', cause })
    }
  }

  /** @internal Use {@link listen}. */
  static open(pathOrFd: string | number, options?: ListenOptions): HandshakeListener {
    return new HandshakeListener(pathOrFd, options)
  }

  /**
   * The next complete handshake: every connection is read as its bytes come, each within
   * `handshakeTimeoutMs` of its accept, so a silent or half-sent one holds up no other. A
   * connection dropped (its time ran out, it closed before sending, its handshake is malformed)
   * rejects this call with why (`error.peer` is set when it sent something: a VM monitor that
   * waits for its handler); the next call goes on with the others. The userfaultfd closes itself when
   * the peer hangs up (an `'error'` event `ERR_UFFD_PEER_GONE` says so). Aborting
   * `options.signal` rejects with an `AbortError` at once, stops the accept (a connection being
   * read is closed) and closes the listener, as `server.listen({ signal })` does.
   *
   * @example
   * ```ts
   * const { uffd } = await listener.accept({ signal: AbortSignal.timeout(10_000) }) // or ABORT_ERR
   * ```
   */
  async accept(options?: AcceptOptions): Promise<Adoption> {
    closeAllOnExit() // a pending accept must not hold up process.exit()
    const signal = optionalSignal('options.signal', optionsOf('options', options).signal)
    if (signal?.aborted) {
      this.close()
      throw new AbortError(signal)
    }
    const cancel = cancelFor(signal)
    return adoptionOf(
      call(() => this.#binding.accept(cancel)),
      signal,
      () => {
        cancel?.cancel()
        this.close()
      },
    )
  }

  /**
   * Stops listening; a pending `accept()` rejects, also one whose peer connected and says nothing.
   * The socket file goes too (as a Node server's does), unless another one has replaced it.
   */
  close(): void {
    this.#binding.close()
    this.#removeSocket()
  }

  /**
   * @internal Stops taking connections (the socket file goes); those taken are still read, each
   * within its time limit, and `accept()` gives them; then it rejects as after `close()`.
   */
  stopAccepting(): void {
    this.#binding.stopAccepting()
    this.#removeSocket()
  }

  /** @internal Hands every VM accepted from now on to `keeper` before it is served. */
  keepWith(keeper: BindingKeeper): void {
    this.#binding.keepWith(keeper)
  }

  #removeSocket(): void {
    const made = this.#socket
    this.#socket = undefined
    if (made !== undefined && statSync(this.#path, { bigint: true, throwIfNoEntry: false })?.ino === made) {
      try {
        unlinkSync(this.#path)
      } catch {}
    }
  }

  /** Calls `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close()
  }
}

/**
 * Listens for handshakes on a Unix socket at `path`. A socket file there that nobody listens on
 * (left by a server that died) is replaced; one a live server listens on is refused
 * (`EADDRINUSE`), as is anything there that is not a socket (`EEXIST`), and left as it is.
 * A number is the fd of a listening Unix socket this process was given (systemd's socket
 * activation: see {@link activatedSocket}); it is not closed or removed for good by `close()`.
 */
export function listen(pathOrFd: string | number, options?: ListenOptions): HandshakeListener {
  return HandshakeListener.open(pathOrFd, options)
}

/** The first fd of systemd's socket activation (SD_LISTEN_FDS_START). */
const LISTEN_FDS_START = 3

/**
 * The listening socket systemd passed to this process (socket activation: `LISTEN_PID` is this
 * process and `LISTEN_FDS` is 1; the socket is fd 3), or undefined if there is none. The variables
 * are removed, so that children do not take the socket as theirs. More than one socket is refused.
 */
export function activatedSocket(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const { LISTEN_PID: pid, LISTEN_FDS: fds } = env
  if (pid === undefined || fds === undefined || Number(pid) !== process.pid) return undefined
  delete env.LISTEN_PID
  delete env.LISTEN_FDS
  delete env.LISTEN_FDNAMES
  if (fds !== '1') {
    throw new UffdError(`systemd passed ${fds} sockets (LISTEN_FDS); one is served: give the service one ListenStream=`, {
      code: 'EINVAL',
    })
  }
  return LISTEN_FDS_START
}

/**
 * Receives one handshake on a connected Unix socket this process holds as `fd` (duplicated).
 * Nothing is read before the peer sends. Aborting `options.signal` rejects with an `AbortError`
 * at once and stops the receive: if nothing was read yet, `fd` is as it was; a handshake being
 * read is cut short and the socket shut down.
 */
export async function receive(fd: number, options?: ReceiveOptions): Promise<Adoption> {
  closeAllOnExit() // a pending receive must not hold up process.exit()
  const signal = optionalSignal('options.signal', optionsOf('options', options).signal)
  const at = integer('fd', fd)
  const bindingOptions = bindingOptionsOf(options, 'adopt')
  if (signal?.aborted) throw new AbortError(signal)
  const cancel = cancelFor(signal)
  return adoptionOf(
    call(() => binding.receiveFd(at, bindingOptions, cancel)),
    signal,
    () => cancel?.cancel(),
  )
}

/** What stops a native handshake when `signal` aborts (nothing to stop without a signal). */
function cancelFor(signal: AbortSignal | undefined): BindingCancel | undefined {
  return signal ? new binding.BindingCancel() : undefined
}
