// The fault dispatcher: takes a batch from the binding, makes a Fault of each fault in it, calls
// the handler, finishes each fault, and reports what went wrong. It knows the façade only through
// the hooks it is given.
//
// Glossary, one name per idea, the same in the Rust core (`crates/uffd-core/src/reader.rs` has
// the core's side; its names in brackets):
// - reader: a thread that reads the userfaultfd and takes turns: one of the package's loop threads
//   (`readers: N`), or a direct reader, the handler's own thread running `runReader`
//   (`handle(fn, { direct: true })`, each worker of `handleInWorker`) [a puller].
// - batch: what a reader hands to JavaScript at once: up to `DEFAULTS.faultsPerBatch` faults packed
//   in a reused Float64Array (`[faults, others, then FAULT_FIELDS numbers per fault]`), then the
//   others, events and notices, from `takeOthers`. `takeFaults` and `pullFaults` fill it
//   [a `Vec<Dispatch>` a turn hands over (`Engine::hand_over`), kept in a `Mailbox` until taken].
// - sink: where a reader hands batches: a thread's handler. The binding calls the sink's callback
//   (`takeBatch`) when batches wait; the owner's thread has a sink of its own for the notices no
//   handler hears [`FaultSink`, the binding's `JsSink`].
// - dispatch: one fault of a batch: a Fault, the handler's call, then its finish (the core applies
//   the fallback, or the wake a `{ wake: false }` resolve left out).
// - notice: what the core says about a fault a handler did not serve (no handler, a timeout, a peer
//   gone); it becomes an 'error' event.
import type { BindingUffd, JsEvent, JsNotice } from './binding'
import { fromBinding, UffdError } from './errors'
import { FAULT_FIELDS, Fault } from './fault'
import { binding } from './loader'
import { DEFAULTS } from './options'
import { Region } from './region'

/** A fault handler: resolve the fault, synchronously or before the returned promise settles. */
export type FaultHandler = (fault: Fault) => void | Promise<void>

/**
 * A handler once installed: `off()` removes it (nothing if another handler has replaced it since),
 * and `using` calls `off()`.
 *
 * @example
 * ```ts
 * using served = uffd.handle((fault) => fault.zero())
 * // ... the handler serves until the end of the block
 * ```
 */
export interface InstalledHandler {
  /** Removes the handler: faults then wait for another (`ERR_UFFD_NO_HANDLER`), as before the first. */
  off(): void
  /** Calls `off()`, for `using`. */
  [Symbol.dispose](): void
}

/** An {@link InstalledHandler} whose `off()` is `off`, once. */
export function installed(off: () => void): InstalledHandler {
  let on = true
  const once = () => {
    if (on) off()
    on = false
  }
  return { off: once, [Symbol.dispose]: once }
}

/** What the dispatcher tells the façade. */
export interface DispatchHooks {
  /** Trouble of the fault path, for an 'error' event. */
  report(error: UffdError): void
  /** A non-cooperative event of a batch (before its faults: they may refer to what it changed). */
  event(raw: JsEvent, handler: FaultHandler): void
  /** A notice of a batch (after its faults). */
  notice(notice: JsNotice): void
}

const NO_OTHERS: never[] = []

/** The dispatcher of one userfaultfd on one thread. */
export class Dispatcher {
  readonly #binding: BindingUffd
  /** The id of the fd in this process, which the per-fault calls name it by. */
  readonly #id: number
  readonly #hooks: DispatchHooks
  /** Where batches arrive, reused: [faults, others, then FAULT_FIELDS numbers per fault]. */
  readonly #batch = new Float64Array(2 + DEFAULTS.faultsPerBatch * FAULT_FIELDS)
  /** Promises of async handlers not settled yet (a direct reader then yields to the event loop often). */
  #pending = 0
  /** Whether a batch is being taken (the reused `#batch` is in use). */
  #taking = false

  constructor(handle: BindingUffd, id: number, hooks: DispatchHooks) {
    this.#binding = handle
    this.#id = id
    this.#hooks = hooks
  }

  /** The sink's callback: takes the batches waiting for this thread's handler, until none is left. */
  takeBatch(handler: FaultHandler): void {
    this.#taking = true
    try {
      for (;;) {
        binding.takeFaults(this.#id, this.#batch)
        if (!this.#onBatch(handler)) return
      }
    } finally {
      this.#taking = false
    }
  }

  /**
   * Takes what waits for `handler` now, unless a batch is being taken already (a handler that
   * closes): `close()` calls it, since the handler's mailbox goes with the handle.
   */
  flush(handler: FaultHandler): void {
    if (!this.#taking) this.takeBatch(handler)
  }

  /**
   * A direct reader's loop: a turn of the fault loop, then of the event loop. It ends when the fd
   * closes or another handler replaces this one; whatever ends it, the loop thread reads again.
   */
  async runReader(handler: FaultHandler, generation: number, keepAlive: boolean): Promise<void> {
    // The reader's turns never keep the thread alive on their own: `keepAlive` (or other work) does.
    const immediate = () =>
      new Promise<void>((resolve) => {
        const next = setImmediate(resolve)
        if (!keepAlive) next.unref()
      })
    try {
      for (let turn = 1; ; turn++) {
        const wait = this.#pending > 0 ? 1 : DEFAULTS.directWaitMs
        if (!binding.pullFaults(this.#id, generation, wait, this.#batch)) return
        const idle = !this.#onBatch(handler)
        // The event loop runs between turns: always when idle or when async handlers wait for it.
        if (idle || this.#pending > 0 || turn % DEFAULTS.directTurnsPerYield === 0) await immediate()
      }
    } catch (error) {
      // A failed read, or a listener that threw: report it; the loop thread takes over below.
      this.#hooks.report(error instanceof UffdError ? error : (fromBinding(error) as UffdError))
    } finally {
      this.#binding.stopDirect(generation)
    }
  }

  /** Handles the batch in `#batch`: its events, its faults, its notices. False if it was empty. */
  #onBatch(handler: FaultHandler): boolean {
    const batch = this.#batch
    const faults = batch[0] as number
    const others = batch[1] ? binding.takeOthers(this.#id) : NO_OTHERS
    if (faults === 0 && others.length === 0) return false
    // Events come first: the kernel may already have changed what the faults after them refer to.
    for (const item of others) if (item.event) this.#hooks.event(item.event, handler)
    const end = 2 + faults * FAULT_FIELDS
    for (let at = 2; at < end; at += FAULT_FIELDS) this.#dispatch(batch, at, handler)
    for (const item of others) if (item.notice) this.#hooks.notice(item.notice)
    return true
  }

  #dispatch(batch: Float64Array, at: number, handler: FaultHandler): void {
    let fault: Fault
    try {
      fault = Fault.fromBatch(this.#id, Region.fromId(batch[at + 1] as number), batch, at)
    } catch {
      // The region was closed in the meantime: its waiters were woken when it was.
      return
    }
    let result: unknown
    try {
      result = handler(fault)
    } catch (error) {
      this.#finish(fault, error)
      return
    }
    if (isPromiseLike(result)) {
      this.#pending++
      result.then(
        () => {
          this.#pending--
          this.#finish(fault, undefined)
        },
        (error: unknown) => {
          this.#pending--
          this.#finish(fault, error ?? new Error('the handler rejected'))
        },
      )
    } else {
      this.#finish(fault, undefined)
    }
  }

  #finish(fault: Fault, error: unknown): void {
    let outcome: ReturnType<Fault['finish']>
    try {
      outcome = fault.finish()
    } catch (finishError) {
      this.#hooks.report(
        finishError instanceof UffdError ? finishError : new UffdError(String(finishError), { code: 'ERR_UFFD_LOOP', cause: finishError }),
      )
      return
    }
    // The common case, on every fault's path: nothing to say.
    if (error === undefined && outcome === 'done') return
    const info = { regionId: fault.region.id, offset: fault.offset, address: fault.address, kind: fault.kind, threadId: fault.threadId }
    const where = `a ${fault.kind} fault at offset ${fault.offset} of region ${fault.region.id}`
    if (error !== undefined) {
      const what = outcome === 'fell-back' ? 'it was resolved by the fallback' : 'the fault had been resolved'
      const thrown = error instanceof Error ? `${error.name}: ${error.message}` : String(error)
      this.#hooks.report(
        new UffdError(`the handler threw (${thrown}) while serving ${where}: ${what}`, {
          code: 'ERR_UFFD_HANDLER_THREW',
          fault: info,
          cause: error,
        }),
      )
    } else if (outcome === 'fell-back') {
      this.#hooks.report(
        new UffdError(`the handler returned without resolving ${where}: it was resolved by the fallback`, {
          code: 'ERR_UFFD_UNRESOLVED',
          fault: info,
        }),
      )
    }
  }
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | undefined)?.then === 'function'
}
