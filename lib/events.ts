// The events a userfaultfd emits, and how what the binding says becomes them: a non-cooperative
// event (remove, unmap, remap, fork) becomes its event, a notice or a handler's trouble an 'error'.
import type { EventEmitter } from 'node:events'
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
 * A fork of the process with registered memory (EVENT_FORK). `Child` is the `Userfaultfd` class:
 * the façade names it (`ForkEvent`), since this module is below it.
 */
export interface ForkEventOf<Child> {
  /** The child's userfaultfd, or undefined where only the parent's thread saw the fork (a handler worker forwards none). */
  readonly child: Child | undefined
  /** The child's copy of the registered memory, as `'remote'` regions (empty when `child` is undefined). */
  readonly regions: readonly Region[]
}

/** Events of a userfaultfd (`Child`: see {@link ForkEventOf}). The non-cooperative ones need their feature (`EVENT_REMOVE`...). */
export interface UserfaultfdEventsOf<Child> {
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
  fork: [ForkEventOf<Child>]
}

/** What the events are emitted on: the façade. */
type Target<Child> = Pick<EventEmitter<UserfaultfdEventsOf<Child>>, 'emit' | 'listenerCount'>

/** An event as a handler worker forwards it to the thread that started it: the range, the regions by id. */
export type ForwardedEvent = Omit<JsEvent, 'kind' | 'child'>

/** The names of the events a handler worker forwards. */
export type ForwardedName = 'remove' | 'unmap' | 'remap' | 'fork'

/** Emits a remove, unmap or remap event from the binding's (a fork is the façade's: it makes a Userfaultfd). */
export function emitRangeEvent<Child>(target: Target<Child>, raw: JsEvent): void {
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
export function report<Child>(target: Target<Child>, error: UffdError): void {
  if (target.listenerCount('error') > 0) target.emit('error', error)
  else process.emitWarning(withCauseInMessage(error))
}

/** The same error, its message followed by its cause's (a printed warning shows no cause). */
function withCauseInMessage(error: UffdError): UffdError {
  const cause = error.cause
  if (cause === undefined) return error
  const text = cause instanceof Error ? cause.message : String((cause as { message?: unknown })?.message ?? cause)
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
