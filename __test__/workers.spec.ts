import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { Region, UffdError, Userfaultfd } from 'userfaultfd'
import { anonymous, isAbortError, nextError, patternByte, patternPage, type Toucher, within, withToucher } from './helpers/harness'
import { runChild } from './helpers/scenario'

const PAGE = 4096
const dir = mkdtempSync(join(tmpdir(), 'uffd-workers-'))
test.after.always(() => rmSync(dir, { recursive: true, force: true }))
const pager = join(__dirname, 'helpers', 'pager.js')
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

test('after handleInWorker rejects (a module that is not there), a fault of the starting thread gets the fallback at once', (t) => {
  const run = runChild('owner-after-rejected-worker', join(dir, 'no-such-pager.mjs'))
  t.is(run.status, 0, run.stderr)
  const read = run.lines.find((line) => 'byte' in line)
  t.is(read?.byte, 0)
  t.true((read?.ms as number) < 10_000, `the read took ${read?.ms} ms`)
  t.deepEqual(
    run.lines.find((line) => 'rejected' in line),
    { rejected: 'ERR_UFFD_WORKER' },
  )
  t.deepEqual(run.lines.find((line) => 'codes' in line)?.codes, ['ERR_UFFD_NO_HANDLER'])
})

test('a failed replacement handler worker leaves the old one serving, and no false ERR_UFFD_HANDLER_GONE', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const errors: string[] = []
  uffd.on('error', (error) => errors.push(error.code))
  await uffd.handleInWorker(pager, { workerData: { mode: 'copy', seed: 3 } })
  await t.throwsAsync(uffd.handleInWorker(join(dir, 'missing-pager.mjs')), { code: 'ERR_UFFD_WORKER' })
  await withToucher([uffd, region], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: [PAGE + 1] })).bytes, [patternByte(PAGE, PAGE, 1, 3)], 'the old worker serves')
  })
  await sleep(100)
  t.deepEqual(errors, [])
})

test('replacing a handler worker: the new one serves, and no ERR_UFFD_HANDLER_GONE is said', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const errors: string[] = []
  uffd.on('error', (error) => errors.push(`${error.code} ${error.message}`))
  await uffd.handleInWorker(pager, { workerData: { mode: 'copy', seed: 1 } })
  await uffd.handleInWorker(pager, { workerData: { mode: 'copy', seed: 2 } })
  await withToucher([uffd, region], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: [2 * PAGE + 1] })).bytes, [patternByte(2 * PAGE, PAGE, 1, 2)])
  })
  await sleep(200)
  t.deepEqual(errors, [])
})

test('a handler module with a syntax error: ERR_UFFD_WORKER names the file and line, and its cause is the SyntaxError', async (t) => {
  const bad = join(dir, 'bad-pager.mjs')
  writeFileSync(bad, 'export default function (fault) {\n  fault.copy(\n}\n')
  const uffd = new Userfaultfd()
  try {
    const error = (await t.throwsAsync(uffd.handleInWorker(bad), { code: 'ERR_UFFD_WORKER' })) as UffdError
    t.true(error.message.includes(`${bad}:3`), error.message)
    t.true(error.cause instanceof Error)
    t.is((error.cause as Error).name, 'SyntaxError')
  } finally {
    uffd.close()
  }
})

/**
 * Reads page after page until a read waits for a handler (its ERR_UFFD_NO_HANDLER comes): a
 * handler removed a moment ago may still serve, or abandon, the faults of that moment.
 */
async function firstUnserved(uffd: Userfaultfd, toucher: Toucher, region: Region, from: number) {
  for (let page = from; page < region.size / PAGE; page++) {
    const read = toucher.read(region, { offsets: [page * PAGE + 5] })
    let heard: (error: UffdError) => void = () => {}
    const waits = new Promise<'waits'>((resolve) => {
      heard = (error) => {
        if (error.code === 'ERR_UFFD_NO_HANDLER') resolve('waits')
      }
      uffd.on('error', heard)
    })
    const first = await within(Promise.race([read.then(() => 'answered' as const), waits]), 'a read or its notice')
    uffd.off('error', heard)
    if (first === 'waits') return { read, page }
  }
  throw new Error('the removed handler went on serving')
}

test('handleInWorker resolves with what removes the worker: off() terminates it, faults then wait for a new handler, and its exit is no ERR_UFFD_HANDLER_GONE', async (t) => {
  const { uffd, region } = anonymous(16)
  const errors: UffdError[] = []
  uffd.on('error', (error) => errors.push(error))
  const served = await within(uffd.handleInWorker(pager, { workerData: { mode: 'copy', seed: 3 } }), 'the first worker')
  await withToucher([uffd, region], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: [5] })).bytes, [patternByte(0, PAGE, 5, 3)])
    served.off()
    const { read, page } = await firstUnserved(uffd, toucher, region, 1)
    await within(uffd.handleInWorker(pager, { workerData: { mode: 'copy', seed: 4 } }), 'the second worker')
    t.deepEqual((await read).bytes, [patternByte(page * PAGE, PAGE, 5, 4)])
  })
  const exits = errors.filter((error) => /exited with code/.test(error.message))
  t.deepEqual(exits, [], 'a worker removed on purpose is no news')
})

/** A handler module that takes a minute to load: its worker is still starting when the test aborts. */
const slowModule = `data:text/javascript,${encodeURIComponent('await new Promise((resolve) => setTimeout(resolve, 60_000))\nexport default () => {}')}`

test('handleInWorker({ signal }): aborting a start rejects with ABORT_ERR, terminates the new worker, and the serving one serves on', async (t) => {
  const { uffd, region } = anonymous(8)
  const errors: UffdError[] = []
  uffd.on('error', (error) => errors.push(error))
  await within(uffd.handleInWorker(pager, { workerData: { mode: 'copy', seed: 5 } }), 'the serving worker')
  const controller = new AbortController()
  const starting = uffd.handleInWorker(slowModule, { signal: controller.signal })
  setTimeout(() => controller.abort(), 50)
  const aborted = await t.throwsAsync(within(starting, 'the abort'))
  t.true(isAbortError(aborted), String(aborted))
  const already = await t.throwsAsync(uffd.handleInWorker(pager, { signal: AbortSignal.abort() }))
  t.true(isAbortError(already), 'an aborted signal rejects at once')
  t.throws(() => uffd.handleInWorker(pager, { signal: 'soon' as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  await withToucher([uffd, region], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: [3 * PAGE + 5] })).bytes, [patternByte(3 * PAGE, PAGE, 5, 5)])
  })
  t.deepEqual(
    errors.map((error) => error.code),
    [],
    'an aborted worker is no ERR_UFFD_WORKER',
  )
})

test('handleInWorker({ signal }): an aborted start ends its expectation, so a fault with no handler is said at once', async (t) => {
  const { uffd, region } = anonymous(4, { timeoutMs: 20_000 })
  const controller = new AbortController()
  const starting = uffd.handleInWorker(slowModule, { signal: controller.signal })
  controller.abort(new Error('changed my mind'))
  const aborted = (await t.throwsAsync(within(starting, 'the abort'))) as Error
  t.true(isAbortError(aborted))
  t.is((aborted.cause as Error).message, 'changed my mind', "the signal's reason is the cause")
  await withToucher([uffd, region], async (toucher) => {
    const noHandler = nextError(uffd, 5_000)
    const read = toucher.read(region, { offsets: [PAGE + 5] })
    t.is((await noHandler).code, 'ERR_UFFD_NO_HANDLER', 'not a silent wait for the aborted worker')
    uffd.handle((fault) => {
      fault.copy(patternPage(fault.offset, PAGE))
    })
    t.deepEqual((await read).bytes, [patternByte(PAGE, PAGE, 5)])
  })
})

// The handler modules handleInWorker takes, as the README shows them: each serves page i filled
// with a byte of its own, so the test sees which export served.
const handlerModules: Array<[string, string, number]> = [
  ['default.mjs', 'export default function (fault) { FILL(11) }', 11],
  ['named.mjs', 'export function handler(fault) { FILL(12) }', 12],
  ['default.cjs', 'module.exports = function (fault) { FILL(13) }', 13],
  ['named.cjs', 'exports.handler = function (fault) { FILL(14) }', 14],
  ['object.cjs', 'module.exports = { handler(fault) { FILL(15) } }', 15],
  // An object built at run time: Node's static scan of CommonJS names no export `handler` here.
  ['built.cjs', 'const api = {}; api.handler = function (fault) { FILL(17) }; module.exports = api', 17],
  ['transpiled.cjs', 'Object.defineProperty(exports, "__esModule", { value: true }); exports.default = function (fault) { FILL(16) }', 16],
]

const fill = (seed: number) => `fault.copy(new Uint8Array(fault.region.pageSize).fill(fault.offset / fault.region.pageSize + ${seed}))`

for (const [name, source, seed] of handlerModules) {
  test(`handleInWorker serves with a handler module like ${name}: ${source.slice(0, 40)}...`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'uffd-handler-'))
    const path = join(dir, name)
    writeFileSync(
      path,
      source.replace(/FILL\((\d+)\)/, (_, n) => fill(Number(n))),
    )
    const uffd = new Userfaultfd()
    const region = Region.anonymous(3 * PAGE)
    uffd.register(region)
    try {
      const served = await uffd.handleInWorker(path)
      const bytes = new Uint8Array(region.buffer)
      t.deepEqual(
        [bytes[0], bytes[PAGE + 9], bytes[2 * PAGE + 4095]],
        [seed, seed + 1, seed + 2],
        'this thread read what the module served',
      )
      served.off()
    } finally {
      uffd.close()
      region.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
}

test('a handler module with neither a default export nor `handler` is refused, saying which exports it needs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-handler-'))
  const path = join(dir, 'neither.cjs')
  writeFileSync(path, 'module.exports = { serve(fault) {} }')
  const uffd = new Userfaultfd()
  try {
    const error = await t.throwsAsync(uffd.handleInWorker(path), { instanceOf: UffdError })
    t.is(error?.code, 'ERR_UFFD_WORKER')
    t.regex(error?.message ?? '', /as its default export or as `handler`/)
  } finally {
    uffd.close()
    rmSync(dir, { recursive: true, force: true })
  }
})

for (const direct of [true, false]) {
  const how = direct ? 'reading the fd itself' : 'fed by the fault loop thread'
  test(`a handler worker ${how}, terminated mid-fault: its faults get the fallback, and a new worker serves`, async (t) => {
    const { uffd, region } = anonymous(8, { timeoutMs: 0 })
    const errors: string[] = []
    uffd.on('error', (error) => errors.push(error.code))
    const pager = join(__dirname, 'helpers', 'pager.js')
    await uffd.handleInWorker(pager, { workerData: { mode: 'never' }, direct })
    await withToucher([uffd, region], async (toucher) => {
      const stuck = toucher.read(region, { offsets: [PAGE + 5] })
      await within(
        (async () => {
          while (uffd.stats.inFlight < 1) await new Promise((resolve) => setTimeout(resolve, 10))
        })(),
        'a fault in the first worker',
      )
      // A second handleInWorker terminates the first worker, which still holds the fault.
      await uffd.handleInWorker(pager, { workerData: { mode: 'copy' }, direct })
      t.deepEqual((await stuck).bytes, [0], 'the orphaned fault got the fallback')
      t.deepEqual(
        (await toucher.read(region, { offsets: [3 * PAGE + 5] })).bytes,
        [patternByte(3 * PAGE, PAGE, 5)],
        'the new worker serves',
      )
      await within(
        (async () => {
          while (!errors.includes('ERR_UFFD_HANDLER_GONE')) await new Promise((resolve) => setTimeout(resolve, 10))
        })(),
        'the handler-gone error',
      )
      t.is(uffd.stats.fallbacks, 1)
    })
  })
}
