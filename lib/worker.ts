// The handler workers of one userfaultfd: `handleInWorker` starts one, which replaces the serving
// one only once it is ready; one that fails leaves the serving one be. A worker serving faults
// never keeps the process alive. What the worker and this thread say to each other is typed here,
// and lib/worker-host.ts (the worker's side) imports it.
import { statSync } from 'node:fs'
import { isAbsolute, join, resolve as resolvePath } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { BindingUffd } from './binding'
import { type InstalledHandler, installed } from './dispatch'
import { AbortError, argumentError, UffdError } from './errors'
import type { ForwardedEvent, ForwardedName } from './events'
import type { WorkerHandlerOptions } from './options'

/** What a handler worker posts to the thread that started it. */
export type WorkerMessage =
  /** The handler is installed and serves, as `generation` (what `keepHandlers` names it by). */
  | { type: 'ready'; generation: number }
  /** An 'error' event of the worker's handle, as `UffdError.toJSON()` made it. */
  | { type: 'error'; error: Record<string, unknown> }
  /** The worker could not start (its module failed to load, or has no default function). */
  | { type: 'failed'; error: Record<string, unknown> }
  /** A non-cooperative event the worker's handler saw. */
  | { type: 'event'; name: ForwardedName; event: ForwardedEvent }

/** What a handler worker is told at its start (through `argv`: it must be there before any message). */
export interface WorkerArgs {
  /** The userfaultfd's id, to attach to. */
  id: number
  /** The handler module. */
  spec: string
  /** Whether the worker reads the fd itself. */
  direct: boolean
  /** The token of `expectHandler`, which the worker ends itself if it fails. */
  expectation: number
}

/** The worker's `argv` for `args`. */
export function argvOf(args: WorkerArgs): string[] {
  return [String(args.id), args.spec, args.direct ? 'direct' : 'callback', String(args.expectation)]
}

/** The {@link WorkerArgs} in a worker's `process.argv`. */
export function argsOf(argv: readonly string[]): WorkerArgs {
  const [id, spec, reading, expectation] = argv.slice(-4)
  return { id: Number(id), spec: String(spec), direct: reading === 'direct', expectation: Number(expectation) }
}

/** What the workers tell the façade. */
export interface WorkerHooks {
  /** Trouble of a worker, for an 'error' event. */
  report(error: UffdError): void
  /** An event a worker forwarded. */
  event(name: ForwardedName, event: ForwardedEvent): void
  /** Whether the userfaultfd was closed (a worker ready after that goes at once). */
  closed(): boolean
}

const workerHost = join(__dirname, 'worker-host.js')

/** The module specifier a worker imports: a URL, a path (resolved here), or a package's name. */
export function moduleSpecifier(module: string | URL): string {
  if (module instanceof URL) return module.href
  if (typeof module !== 'string') throw argumentError('module', 'a string or a URL', module)
  if (module.startsWith('file:') || module.startsWith('data:')) return module
  if (isAbsolute(module) || module.startsWith('.')) return pathToFileURL(resolvePath(module)).href
  // A bare name is a path relative to the current directory when such a file is there (as the
  // docs say), else a package's name.
  if (statSync(resolvePath(module), { throwIfNoEntry: false })?.isFile()) return pathToFileURL(resolvePath(module)).href
  return module
}

/** The handler workers of one userfaultfd: the serving ones, and those starting. */
export class HandlerWorkers {
  readonly #binding: BindingUffd
  readonly #id: number
  readonly #hooks: WorkerHooks
  /** The workers whose handlers serve (one, or a group started with `workers: N`). */
  #serving: Worker[] = []
  /** Workers being started (the serving one stays until one is ready). */
  readonly #starting = new Set<Worker>()

  constructor(handle: BindingUffd, id: number, hooks: WorkerHooks) {
    this.#binding = handle
    this.#id = id
    this.#hooks = hooks
  }

  /**
   * Starts `options.workers` workers serving faults with the default export of `spec`; resolves
   * once all their handlers are installed. They serve beside the serving ones while they start;
   * once all are ready they replace them (those are terminated then). If one fails or the signal
   * aborts, the whole new group goes and the serving ones serve on.
   */
  async start(spec: string, options: WorkerHandlerOptions & { direct: boolean; workers: number }): Promise<InstalledHandler> {
    const starting = Array.from({ length: options.workers }, () => this.#startOne(spec, options))
    const settled = await Promise.allSettled(starting)
    const ready = settled.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []))
    const failed = settled.find((outcome) => outcome.status === 'rejected')
    if (failed) {
      for (const { worker } of ready) void worker.terminate()
      throw failed.reason
    }
    // The new group serves already: the handlers it replaces go only now.
    this.#binding.keepHandlers(ready.map(({ generation }) => generation))
    const group = ready.map(({ worker }) => worker)
    for (const replaced of this.#serving) void replaced.terminate()
    this.#serving = group
    if (this.#hooks.closed()) for (const worker of group) void worker.terminate()
    return installed(() => this.#retire(ready))
  }

  /** Starts one worker, beside the handlers that serve; resolves once its handler is installed. */
  #startOne(spec: string, options: WorkerHandlerOptions & { direct: boolean }): Promise<{ worker: Worker; generation: number }> {
    const { workerData, resourceLimits, execArgv, direct, signal } = options
    if (signal?.aborted) return Promise.reject(new AbortError(signal))
    // Faults wait for this handler without a notice until it is ready or has failed (the worker
    // ends the expectation itself if it fails while this thread sleeps in a fault).
    const expectation = this.#binding.expectHandler()
    const worker = new Worker(workerHost, {
      argv: argvOf({ id: this.#id, spec, direct, expectation }),
      workerData,
      ...(resourceLimits ? { resourceLimits } : {}),
      ...(execArgv ? { execArgv } : {}),
    })
    this.#starting.add(worker)
    return new Promise<{ worker: Worker; generation: number }>((resolve, reject) => {
      let ready = false
      let settled = false
      const settle = () => {
        settled = true
        this.#starting.delete(worker)
        this.#binding.unexpectHandler(expectation)
        signal?.removeEventListener('abort', onAbort)
      }
      const fail = (error: Error) => {
        if (settled) return
        settle()
        void worker.terminate()
        reject(error)
      }
      // An abort after this worker's 'ready' fails the group's other workers still starting; a
      // group that is all ready has replaced the serving one already.
      const onAbort = () => fail(new AbortError(signal as AbortSignal))
      signal?.addEventListener('abort', onAbort, { once: true })
      worker.on('message', (message: WorkerMessage) => {
        if (message.type === 'event' && message.event) {
          this.#hooks.event(message.name, message.event)
        } else if (message.type === 'ready') {
          if (settled) return
          ready = true
          settle()
          // Serving faults never keeps the process alive on its own (awaiting the start did).
          worker.unref()
          resolve({ worker, generation: message.generation })
        } else if (message.type === 'error' && message.error) {
          this.#hooks.report(UffdError.fromJSON(message.error))
        } else if (message.type === 'failed' && message.error) {
          fail(UffdError.fromJSON(message.error))
        }
      })
      worker.on('error', (cause) => {
        const error = new UffdError(`the handler worker for ${spec} failed: ${cause.message}`, { code: 'ERR_UFFD_WORKER', cause })
        if (ready) this.#hooks.report(error)
        else fail(error)
      })
      worker.on('exit', (code) => {
        if (!ready) {
          fail(new UffdError(`the handler worker for ${spec} exited with code ${code} before it was ready`, { code: 'ERR_UFFD_WORKER' }))
          return
        }
        // A worker that was replaced, removed or closed went on purpose; only the serving one's
        // exit is news, and only if no handler serves now (a replacement may have installed its own already).
        if (!this.#serving.includes(worker)) return
        this.#serving = this.#serving.filter((serving) => serving !== worker)
        if (!this.#hooks.closed() && !this.#binding.hasHandler) {
          this.#hooks.report(
            new UffdError(`the handler worker for ${spec} exited with code ${code}: faults now wait for a new handler`, {
              code: 'ERR_UFFD_HANDLER_GONE',
            }),
          )
        }
      })
    })
  }

  /** Terminates every worker, serving or starting. */
  close(): void {
    for (const worker of this.#serving) void worker.terminate()
    this.#serving = []
    for (const worker of this.#starting) void worker.terminate()
    this.#starting.clear()
  }

  /**
   * `off()` of a group's handlers: no fault is handed to them from now on (a worker ends
   * asynchronously), and those that still serve are terminated.
   */
  #retire(group: { worker: Worker; generation: number }[]): void {
    const serving = group.filter(({ worker }) => this.#serving.includes(worker))
    this.#binding.retireHandlers(serving.map(({ generation }) => generation))
    for (const { worker } of serving) {
      this.#serving = this.#serving.filter((other) => other !== worker)
      void worker.terminate()
    }
  }
}
