// The worker that handleInWorker() starts: it attaches to the userfaultfd, imports the handler
// module, serves faults with its default export, and forwards 'error' events to the parent.
import { parentPort } from 'node:worker_threads'
import { UffdError } from './errors'
import type { Region } from './region'
import { type RangeEvent, Userfaultfd } from './userfaultfd'

type Handler = (fault: unknown) => unknown

function handlerOf(module: Record<string, unknown>): Handler | undefined {
  const candidates = [module.default, (module.default as Record<string, unknown> | undefined)?.default, module.handler]
  return candidates.find((c): c is Handler => typeof c === 'function')
}

function toJSON(error: unknown): Record<string, unknown> {
  if (error instanceof UffdError) return error.toJSON()
  const e = error instanceof Error ? error : new Error(String(error))
  return { message: e.message, code: 'ERR_UFFD_WORKER', stack: e.stack }
}

async function main(port: NonNullable<typeof parentPort>): Promise<void> {
  const [id, spec, reading] = process.argv.slice(-3)
  const uffd = Userfaultfd.attach({ type: 'userfaultfd.uffd', id: Number(id) })
  const handler = handlerOf((await import(String(spec))) as Record<string, unknown>)
  if (!handler) throw new TypeError(`${spec} must export a default function (fault) => void | Promise<void>`)
  uffd.on('error', (error) => port.postMessage({ type: 'error', error: toJSON(error) }))
  for (const name of ['remove', 'unmap', 'remap'] as const) {
    uffd.on(name, ({ region, ...range }: RangeEvent & { moved?: Region }) => {
      const { moved, ...plain } = range
      port.postMessage({ type: 'event', name, event: { ...plain, regionId: region?.id, movedId: moved?.id } })
    })
  }
  uffd.on('fork', () => port.postMessage({ type: 'event', name: 'fork', event: {} }))
  uffd.handle(handler as (fault: Parameters<Parameters<Userfaultfd['handle']>[0]>[0]) => void, {
    keepAlive: true,
    direct: reading === 'direct',
  })
  port.postMessage({ type: 'ready' })
}

if (parentPort) {
  const port = parentPort
  main(port).catch((error: unknown) => {
    port.postMessage({ type: 'failed', error: toJSON(error) })
    process.exitCode = 1
  })
}
