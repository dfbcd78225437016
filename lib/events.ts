// The events a userfaultfd emits, and how what the binding says becomes them: a non-cooperative
// event (remove, unmap, remap, fork) becomes its event, a notice or a handler's trouble an 'error'.
import type { JsEvent } from './binding'
import { UffdError } from './errors'
import { Region } from './region'

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

/**
 * What the events are emitted on: the façade. (Its event map, `UserfaultfdEvents`, names the
 * Userfaultfd class for 'fork', so it is declared there, and only what this module emits is here.)
 */
interface Target {
  emit(name: 'remove' | 'unmap', event: RangeEvent): boolean
  emit(name: 'remap', event: RemapEvent): boolean
  emit(name: 'error', error: UffdError): boolean
  listenerCount(name: 'error'): number
}

/** An event as a handler worker forwards it to the thread that started it: the range, the regions by id. */
export type ForwardedEvent = Omit<JsEvent, 'kind' | 'child'>

/** The names of the events a handler worker forwards. */
export type ForwardedName = 'remove' | 'unmap' | 'remap' | 'fork'

/** Emits a remove, unmap or remap event from the binding's (a fork is the façade's: it makes a Userfaultfd). */
export function emitRangeEvent(target: Target, raw: JsEvent): void {
  const region = regionOrNothing(raw.regionId)
  const range = { region, offset: raw.offset, length: raw.length ?? 0, start: raw.start ?? 0n, end: raw.end ?? 0n }
  if (raw.kind === 'remap') target.emit('remap', { ...range, to: raw.to ?? 0n, moved: regionOrNothing(raw.movedId) })
  else if (raw.kind === 'remove' || raw.kind === 'unmap') target.emit(raw.kind, range)
}

/** A range event as a handler worker posts it (regions cannot cross threads: their ids do). */
export function forwardedOf(event: RangeEvent | RemapEvent): ForwardedEvent {
  const { region, moved, ...plain } = event as RemapEvent
  return { ...plain, regionId: region?.id, movedId: moved?.id }
}

/** The binding's form of a forwarded event again, on the thread that started the worker. */
export function eventOfForwarded(name: ForwardedName, event: ForwardedEvent): JsEvent {
  return { ...event, kind: name, child: undefined }
}

/**
 * Emits an 'error' event, or a process warning if nobody listens (an unheard 'error' would
 * crash); the warning's text carries the cause's, which a printed warning would not show.
 */
export function report(target: Target, error: UffdError): void {
  if (target.listenerCount('error') > 0) target.emit('error', error)
  else process.emitWarning(withCauseInMessage(error))
}

/** The same error, its message followed by its cause's (a printed warning shows no cause). */
function withCauseInMessage(error: UffdError): UffdError {
  const cause = error.cause
  if (cause === undefined) return error
  const text = cause instanceof Error ? cause.message : String((cause as { message?: unknown })?.message ?? cause)
  if (error.message.includes(text)) return error
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

/** The Region of an id an event names, if it is still open. */
function regionOrNothing(id: number | undefined): Region | undefined {
  if (id === undefined) return undefined
  try {
    return Region.fromId(id)
  } catch {
    return undefined
  }
}
