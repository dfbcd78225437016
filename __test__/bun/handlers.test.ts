// Handlers under Bun: no hang, freeze or silent zeros for ordinary mistakes.
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Region, Source, type UffdError, Userfaultfd } from 'userfaultfd'
import { readInWorker, within } from './helpers'

const PAGE = 4096
const dir = mkdtempSync(join(tmpdir(), 'uffd-bun-field-'))
const child = new URL('./scenario-child.ts', import.meta.url).pathname

function run(scenario: string): { status: number | null; ms: number; line: Record<string, unknown> | undefined; stderr: string } {
  const started = Date.now()
  const result = Bun.spawnSync([process.execPath, child, scenario], { timeout: 60_000 })
  const line = result.stdout
    .toString()
    .split('\n')
    .find((text) => text.startsWith('{'))
  return { status: result.exitCode, ms: Date.now() - started, line: line ? JSON.parse(line) : undefined, stderr: result.stderr.toString() }
}

describe('field reliability under Bun', () => {
  test('a script that uses handleInWorker and forgets close() ends by itself', () => {
    const result = run('forget-close-worker')
    expect(result.status).toBe(0)
    expect(result.line).toEqual({ byte: 2 })
    expect(result.ms).toBeLessThan(20_000)
  })

  test('process.exit() returns promptly while a worker sleeps in a fault nothing serves', () => {
    const result = run('exit-with-fault')
    expect(result.status).toBe(0)
    expect(result.line).toEqual({ inFlight: 1 })
    expect(result.ms).toBeLessThan(20_000)
  })

  test('the thread that would install the handler faults with none: the fallback at once, ERR_UFFD_NO_HANDLER', () => {
    const result = run('owner-no-handler')
    expect(result.status).toBe(0)
    expect(result.line?.byte).toBe(0)
    expect(result.line?.ms as number).toBeLessThan(5_000)
    expect(result.line?.codes).toEqual(['ERR_UFFD_NO_HANDLER'])
  })

  test('a fault with no handler emits ERR_UFFD_NO_HANDLER at once; a handler installed later serves it', async () => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(4 * PAGE)
    uffd.register(region)
    const said = within(new Promise<UffdError>((resolve) => uffd.once('error', resolve)), 'an error event')
    const { bytes, worker } = readInWorker(region, [PAGE + 1])
    expect((await said).code).toBe('ERR_UFFD_NO_HANDLER')
    uffd.handle((fault) => void fault.copy(new Uint8Array(PAGE).fill(33)))
    expect(await bytes).toEqual([33])
    worker.terminate()
    uffd.close()
    region.close()
  })

  test('a fault resolved with { wake: false } sleeps past the handler’s return until fault.wake()', async () => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(4 * PAGE)
    uffd.register(region)
    const held: Array<{ wake(): void }> = []
    uffd.handle((fault) => {
      fault.copy(new Uint8Array(PAGE).fill(44), { wake: false })
      held.push(fault)
    })
    const { bytes, worker } = readInWorker(region, [2 * PAGE])
    while (held.length === 0) await new Promise((resolve) => setTimeout(resolve, 5))
    const early = await Promise.race([bytes.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 300))])
    expect(early).toBe(false)
    held[0]?.wake()
    expect(await bytes).toEqual([44])
    worker.terminate()
    uffd.close()
    region.close()
  })

  test('Source.file refuses a directory when it is made', () => {
    expect(() => Source.file(dir)).toThrow(/directory/)
  })

  test('a handler module with a syntax error: ERR_UFFD_WORKER names the file and line, with the SyntaxError as cause', async () => {
    const bad = join(dir, 'bad-pager.mjs')
    writeFileSync(bad, 'export default function (fault) {\n  fault.copy(\n}\n')
    const uffd = new Userfaultfd()
    const error = (await uffd.handleInWorker(bad).catch((e) => e)) as UffdError
    expect(error.code).toBe('ERR_UFFD_WORKER')
    expect(error.message).toContain(`${bad}:3`)
    // Bun's parse error is a BuildMessage (Node's a SyntaxError): the cause is what Bun threw.
    expect(String((error.cause as Error).message)).toContain('Unexpected')
    uffd.close()
  })

  test('a failed replacement handler worker leaves the old one serving', async () => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(4 * PAGE)
    uffd.register(region)
    await uffd.handleInWorker(new URL('./pager.ts', import.meta.url))
    const failed = (await uffd.handleInWorker(join(dir, 'no-such-pager.mjs')).catch((e) => e)) as UffdError
    expect(failed.code).toBe('ERR_UFFD_WORKER')
    const { bytes, worker } = readInWorker(region, [3 * PAGE])
    expect(await bytes).toEqual([4])
    worker.terminate()
    uffd.close()
    region.close()
  })
})
