// The worker that handleInWorker() starts: it attaches to the userfaultfd, imports the handler
// module, serves faults with its handler (see handlerOf), and forwards 'error' events to the parent.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parentPort } from 'node:worker_threads'
import type { FaultHandler } from './dispatch'
import { UffdError } from './errors'
import { forwardedOf } from './events'
import { binding } from './loader'
import { type HandleOptions, JOIN } from './options'
import { Userfaultfd } from './userfaultfd'
import { argsOf, type WorkerArgs, type WorkerMessage } from './worker'

type Handler = (fault: unknown) => unknown

/**
 * The handler of a module, as `handleInWorker` documents it: the default export (ESM
 * `export default`, CommonJS `module.exports = fn`, or a transpiled module's `exports.default`),
 * else the export named `handler` (ESM `export function handler`, CommonJS `exports.handler` or
 * `module.exports = { handler }`).
 */
function handlerOf(module: Record<string, unknown>): Handler | undefined {
  const exported = module.default as Record<string, unknown> | undefined
  const candidates = [module.default, exported?.default, module.handler, exported?.handler]
  return candidates.find((c): c is Handler => typeof c === 'function')
}

function toJSON(error: unknown): Record<string, unknown> {
  if (error instanceof UffdError) return error.toJSON()
  const e = error instanceof Error ? error : new Error(String(error))
  return { message: e.message, code: 'ERR_UFFD_WORKER', stack: e.stack }
}

/**
 * Where a module's syntax error is: Node's dynamic import names neither file nor line, so the
 * file is checked again with `node --check`, whose first line is `path:line`; Bun gives the line.
 */
function syntaxErrorAt(spec: string, error: Error): string | undefined {
  if (!spec.startsWith('file:')) return undefined
  const path = fileURLToPath(spec)
  // Bun: a BuildMessage with its position, or a SyntaxError with a 0-based line.
  const { position, line } = error as Error & { position?: { line?: number; column?: number }; line?: number }
  if (typeof position?.line === 'number') return `${path}:${position.line}${position.column ? `:${position.column}` : ''}`
  if (typeof line === 'number') return `${path}:${line + 1}`
  const check = spawnSync(process.execPath, ['--check', path], { encoding: 'utf8', timeout: 10_000 })
  return check.stderr?.split('\n').find((text) => text.startsWith(path))
}

/** The error of a handler module that could not be loaded or served: what, where, and the cause. */
function failure(spec: string, error: unknown): Record<string, unknown> {
  if (error instanceof UffdError) return error.toJSON()
  const cause = error instanceof Error ? error : new Error(String(error))
  const unparsable = cause instanceof SyntaxError || cause.name === 'BuildMessage' || cause.constructor?.name === 'BuildMessage'
  const at = unparsable ? syntaxErrorAt(spec, cause) : undefined
  const where = at ? ` at ${at}` : ''
  return new UffdError(`the handler module ${spec} failed to load${where}: ${cause.name}: ${cause.message}`, {
    code: 'ERR_UFFD_WORKER',
    cause,
  }).toJSON()
}

async function main(port: NonNullable<typeof parentPort>, { id, spec, direct }: WorkerArgs): Promise<void> {
  const post = (message: WorkerMessage) => port.postMessage(message)
  const uffd = Userfaultfd.attach({ type: 'userfaultfd.uffd', id })
  const handler = handlerOf((await import(spec)) as Record<string, unknown>)
  if (!handler) {
    throw new TypeError(`${spec} must export a function (fault) => void | Promise<void>, as its default export or as \`handler\``)
  }
  uffd.on('error', (error) => post({ type: 'error', error: toJSON(error) }))
  for (const name of ['remove', 'unmap'] as const) uffd.on(name, (event) => post({ type: 'event', name, event: forwardedOf(event) }))
  uffd.on('remap', (event) => post({ type: 'event', name: 'remap', event: forwardedOf(event) }))
  uffd.on('fork', () => post({ type: 'event', name: 'fork', event: {} }))
  // Beside the serving handlers: the parent replaces them (keepHandlers) once its group is ready.
  uffd.handle(handler as FaultHandler, { keepAlive: true, direct, [JOIN]: true } as HandleOptions)
  post({ type: 'ready', generation: uffd.handlerGeneration })
}

if (parentPort) {
  const port = parentPort
  const args = argsOf(process.argv)
  main(port, args).catch((error: unknown) => {
    // Said here, not only by the parent: the parent's thread may be asleep in a fault that
    // waits for this handler, and only this ends the wait (the fallback resolves it).
    try {
      binding.BindingUffd.attach(args.id).unexpectHandler(args.expectation)
    } catch {}
    port.postMessage({ type: 'failed', error: failure(args.spec, error) } satisfies WorkerMessage)
    process.exitCode = 1
  })
}
