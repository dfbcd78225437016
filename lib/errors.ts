// UffdError: every error this package throws or emits, with Node's fields (code, errno, syscall).
import type { BindingFailure, JsNotice } from './binding'

/** Codes of errors that are not an errno: what the fault loop or a handler reported. */
export type UffdNoticeCode =
  | 'ERR_UFFD_SELF_FAULT'
  | 'ERR_UFFD_TIMEOUT'
  | 'ERR_UFFD_HANDLER_GONE'
  | 'ERR_UFFD_UNKNOWN_ADDRESS'
  | 'ERR_UFFD_FALLBACK_FAILED'
  | 'ERR_UFFD_LOOP'
  | 'ERR_UFFD_HANDLER_THREW'
  | 'ERR_UFFD_UNRESOLVED'
  | 'ERR_UFFD_NOT_WOKEN'
  | 'ERR_UFFD_WORKER'
  | 'ERR_UFFD_PEER_GONE'
  | 'ERR_UFFD_NO_HANDLER'
  | 'ERR_UFFD_SOURCE'
  | 'ERR_UFFD_WRITE_BACK'
  | 'ERR_UFFD_PEER_KILLED'
  | 'ERR_UFFD_TRACE_STALE'

/** An errno name (`'EEXIST'`) or one of the package's own codes. */
export type UffdErrorCode = UffdNoticeCode | `E${Uppercase<string>}`

/** Where a fault was, for errors about a fault. */
export interface FaultInfo {
  /** The id of the region the fault was in ({@link Region.id}). */
  readonly regionId: number
  /** Offset of the faulting page in the region (page-aligned). */
  readonly offset: number
  /** The faulting address (exact where EXACT_ADDRESS was negotiated). */
  readonly address: bigint
  /** The fault's kind: `'missing'`, `'minor'` or `'wp'` (a {@link FaultKind}). */
  readonly kind: string
  /** The kernel thread id of the faulting thread (0 without THREAD_ID). */
  readonly threadId: number
}

/** The fields of a new {@link UffdError}. */
export interface UffdErrorOptions {
  /** An errno name (`'EEXIST'`) or an `ERR_UFFD_*` code. */
  code: UffdErrorCode
  /** The errno, negative as in Node (`-17` for EEXIST); undefined for the package's own codes. */
  errno?: number | undefined
  /** The call that failed: an ioctl (`'UFFDIO_COPY'`) or a syscall (`'mmap'`). */
  syscall?: string | undefined
  /** The fault the error is about, if any. */
  fault?: FaultInfo | undefined
  /** For a refused handshake: the process that sent it (SO_PEERCRED), to stop it. */
  peer?:
    | {
        /** The process id of the peer. */
        readonly pid: number
      }
    | undefined
  /** The underlying error, kept as the error's `cause`. */
  cause?: unknown
  /** The HTTP status a remote store answered with (an object-store source), if that is what failed. */
  status?: number | undefined
  /** @internal The message with the command line's flags for its advice, where that differs. */
  commandLineMessage?: string | undefined
}

/**
 * The error of every failed call and every `'error'` event.
 *
 * Like Node's own `fs` errors it has `code` (`'EEXIST'`, `'EINVAL'`, or an `ERR_UFFD_*` code for
 * trouble in the fault path), `errno` (negative, as in Node) and `syscall` (`'UFFDIO_COPY'`).
 *
 * @example
 * ```ts
 * try { uffd.copy(region, 0, page) } catch (err) {
 *   if (err instanceof UffdError && err.code === 'EEXIST') { // already mapped }
 * }
 * ```
 */
export class UffdError extends Error {
  /** Always `'UffdError'`. */
  override readonly name = 'UffdError'
  /** An errno name (`'EEXIST'`, `'EINVAL'`) or an `ERR_UFFD_*` code for trouble in the fault path. */
  readonly code: UffdErrorCode
  /** The errno, negative as in Node (`-17` for EEXIST); undefined for `ERR_UFFD_*` codes. */
  readonly errno: number | undefined
  /** The call that failed: an ioctl (`'UFFDIO_COPY'`) or a syscall (`'mmap'`); undefined if none. */
  readonly syscall: string | undefined
  /** The fault the error is about, if any. */
  readonly fault: FaultInfo | undefined
  /**
   * For a refused handshake: the process that sent it (SO_PEERCRED). A VM monitor waits for its
   * handler: one that cannot serve it should stop it (`process.kill(error.peer.pid, 'SIGKILL')`).
   */
  readonly peer:
    | {
        /** The process id of the peer. */
        readonly pid: number
      }
    | undefined
  /** The HTTP status a remote store answered with (404, 403, 503...), if that is what failed. */
  readonly status: number | undefined
  /** @internal The message with the command line's flags for its advice, where that differs. */
  readonly commandLineMessage: string | undefined

  constructor(message: string, options: UffdErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = options.code
    this.errno = options.errno
    this.syscall = options.syscall
    this.fault = options.fault
    this.peer = options.peer
    this.status = options.status
    this.commandLineMessage = options.commandLineMessage
  }

  /** A plain object that survives postMessage; `fromJSON` makes the error again. */
  toJSON(): Record<string, unknown> {
    const { fault } = this
    return {
      message: this.message,
      code: this.code,
      errno: this.errno,
      syscall: this.syscall,
      status: this.status,
      stack: this.stack,
      fault: fault && { ...fault, address: String(fault.address) },
      cause: this.cause instanceof Error ? { name: this.cause.name, message: this.cause.message, stack: this.cause.stack } : this.cause,
    }
  }

  /** Makes the error again from what {@link UffdError.toJSON} returned (e.g. after postMessage). */
  static fromJSON(json: Record<string, unknown>): UffdError {
    const fault = json.fault as (Omit<FaultInfo, 'address'> & { address: string }) | undefined
    const error = new UffdError(String(json.message), {
      code: json.code as UffdErrorCode,
      errno: json.errno as number | undefined,
      syscall: json.syscall as string | undefined,
      status: json.status as number | undefined,
      fault: fault && { ...fault, address: BigInt(fault.address) },
      cause: errorOf(json.cause),
    })
    if (typeof json.stack === 'string') error.stack = json.stack
    return error
  }
}

/** An Error again from what toJSON made of one (a plain `{ name, message, stack }` after postMessage). */
function errorOf(cause: unknown): unknown {
  const plain = cause as { name?: unknown; message?: unknown; stack?: unknown } | undefined
  if (typeof plain !== 'object' || plain === null || typeof plain.message !== 'string') return cause
  const error = new Error(plain.message)
  if (typeof plain.name === 'string') error.name = plain.name
  if (typeof plain.stack === 'string') error.stack = plain.stack
  return error
}

/** What the binding says of a failure, however it says it (thrown, as a value, as a notice's cause). */
interface BindingFields {
  message: string
  code?: string
  errno?: number
  syscall?: string
  status?: number | null
  peerPid?: number | null
  commandLineMessage?: string | null
}

/**
 * The one converter of the binding's failures: a UffdError with Node's fields; a number out of
 * its bounds is a RangeError `ERR_OUT_OF_RANGE`, as when the binding throws it.
 */
function converted(fields: BindingFields): UffdError | RangeError {
  if (fields.code === 'ERR_OUT_OF_RANGE') return Object.assign(new RangeError(fields.message), { code: fields.code })
  return new UffdError(fields.message, {
    code: (fields.code ?? 'EIO') as UffdErrorCode,
    errno: fields.errno,
    syscall: fields.syscall,
    peer: fields.peerPid == null ? undefined : { pid: fields.peerPid },
    status: fields.status ?? undefined,
    commandLineMessage: fields.commandLineMessage ?? undefined,
  })
}

/** Turns an error thrown by the binding into a UffdError; anything else passes through. */
export function fromBinding(error: unknown): unknown {
  const e = error as Error & BindingFields & { uffd?: boolean }
  if (!(e instanceof Error && e.uffd)) return error
  const made = converted(e)
  made.stack = `${made.name}: ${e.message}\n${(e.stack ?? '').split('\n').slice(1).join('\n')}`
  return made
}

/** The error of a failure that the binding reports as a value (from a pool thread's work). */
export function fromFailure(failure: BindingFailure): UffdError | RangeError {
  return converted(failure)
}

/** Calls into the binding, turning its errors into UffdErrors. */
export function call<T>(fn: () => T): T {
  try {
    return fn()
  } catch (error) {
    throw fromBinding(error)
  }
}

const noticeCodes: Record<string, UffdNoticeCode> = {
  'self-fault': 'ERR_UFFD_SELF_FAULT',
  timeout: 'ERR_UFFD_TIMEOUT',
  'handler-gone': 'ERR_UFFD_HANDLER_GONE',
  'unknown-address': 'ERR_UFFD_UNKNOWN_ADDRESS',
  'fallback-failed': 'ERR_UFFD_FALLBACK_FAILED',
  'loop-failed': 'ERR_UFFD_LOOP',
  'peer-gone': 'ERR_UFFD_PEER_GONE',
  'no-handler': 'ERR_UFFD_NO_HANDLER',
  'no-handler-fell-back': 'ERR_UFFD_NO_HANDLER',
  'source-failed': 'ERR_UFFD_SOURCE',
  'not-woken': 'ERR_UFFD_NOT_WOKEN',
  'write-back-failed': 'ERR_UFFD_WRITE_BACK',
}

/** The error event for a notice from the fault loop. */
export function fromNotice(notice: JsNotice): UffdError {
  const cause =
    notice.causeCode === undefined
      ? undefined
      : converted({
          message: notice.causeMessage ?? notice.causeCode,
          code: notice.causeCode,
          errno: notice.causeErrno,
          syscall: notice.causeSyscall,
          status: notice.causeStatus,
        })
  const { fault } = notice
  return new UffdError(notice.message, {
    code: noticeCodes[notice.kind] ?? 'ERR_UFFD_LOOP',
    fault: fault && {
      regionId: fault.regionId,
      offset: fault.offset,
      address: fault.address,
      kind: fault.kind,
      threadId: fault.threadId,
    },
    cause,
  })
}

/** A TypeError with Node's code for an argument of the wrong type. */
export function argumentError(name: string, expected: string, value: unknown): TypeError {
  const error = new TypeError(`The "${name}" argument must be ${expected}. Received ${describe(value)}`) as TypeError & { code: string }
  error.code = 'ERR_INVALID_ARG_TYPE'
  return error
}

/** A number outside its range, as Node.js reports one (`ERR_OUT_OF_RANGE`). */
export function rangeError(name: string, range: string, value: number): RangeError {
  const error = new RangeError(`The value of "${name}" is out of range. It must be ${range}. Received ${value}`) as RangeError & {
    code: string
  }
  error.code = 'ERR_OUT_OF_RANGE'
  return error
}

/** An option no API of that name has (`ERR_INVALID_ARG_VALUE`), with the nearest it has. */
export function unknownOptionError(name: string, where: string, nearest: string | undefined): TypeError {
  const hint = nearest === undefined ? '' : `: did you mean "${nearest}"?`
  const error = new TypeError(`The property "${name}" is not an option of ${where}${hint}`) as TypeError & { code: string }
  error.code = 'ERR_INVALID_ARG_VALUE'
  return error
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value === 'bigint') return `type bigint (${value}n)`
  if (typeof value === 'object' || typeof value === 'function') return `an instance of ${value.constructor?.name ?? 'Object'}`
  return `type ${typeof value} (${String(value)})`
}

/**
 * What a call given `{ signal }` rejects with once the signal aborts: Node's AbortError, with
 * `code: 'ABORT_ERR'` and the signal's reason as `cause`.
 */
export class AbortError extends Error {
  /** Always `'AbortError'`. */
  override readonly name = 'AbortError'
  /** Always `'ABORT_ERR'`, as Node's own. */
  readonly code = 'ABORT_ERR'

  constructor(signal: AbortSignal) {
    super('The operation was aborted', { cause: signal.reason })
  }
}
