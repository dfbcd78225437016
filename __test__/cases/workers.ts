// Handler workers (handleInWorker): a start that fails, a replacement, a module that cannot load,
// off() and abort signals, the module forms the README documents, a worker terminated mid-fault. Run
// under Node.js (workers.spec.ts) and Bun (bun/workers.test.ts).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Region, UffdError, Userfaultfd } from 'userfaultfd'
import { anonymous, isAbortError, nextError, patternByte, patternPage, within } from '../helpers/harness'
import { type Runtime, table } from './check'

const { table: workerCases, define } = table()

export { workerCases }

const PAGE = 4096
const dir = mkdtempSync(join(tmpdir(), 'uffd-workers-'))
define.after(() => rmSync(dir, { recursive: true, force: true }))
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

define(
  'after handleInWorker rejects (a module that is not there), a fault of the starting thread gets the fallback at once',
  (t, runtime) => {
    const run = runtime.child('owner-after-rejected-worker', join(dir, 'no-such-pager.mjs'))
    t.is(run.status, 0, run.stderr)
    const read = run.lines.find((line) => 'byte' in line)
    t.is(read?.byte, 0)
    t.true((read?.ms as number) < 10_000, `the read took ${read?.ms} ms`)
    t.deepEqual(
      run.lines.find((line) => 'rejected' in line),
      { rejected: 'ERR_UFFD_WORKER' },
    )
    t.deepEqual(run.lines.find((line) => 'codes' in line)?.codes, ['ERR_UFFD_NO_HANDLER'])
  },
)

define('a failed replacement handler worker leaves the old one serving, and no false ERR_UFFD_HANDLER_GONE', async (t, runtime) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const errors: string[] = []
  uffd.on('error', (error) => errors.push(error.code))
  await uffd.handleInWorker(runtime.helper('pager'), { workerData: { mode: 'copy', seed: 3 } })
  await t.throwsAsync(uffd.handleInWorker(join(dir, 'missing-pager.mjs')), { code: 'ERR_UFFD_WORKER' })
  try {
    t.deepEqual(await runtime.touch(region, [PAGE + 1]), [patternByte(PAGE, PAGE, 1, 3)], 'the old worker serves')
  } finally {
    uffd.close()
    region.close()
  }
  await sleep(100)
  t.deepEqual(errors, [])
})

define('replacing a handler worker: the new one serves, and no ERR_UFFD_HANDLER_GONE is said', async (t, runtime) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const errors: string[] = []
  uffd.on('error', (error) => errors.push(`${error.code} ${error.message}`))
  await uffd.handleInWorker(runtime.helper('pager'), { workerData: { mode: 'copy', seed: 1 } })
  await uffd.handleInWorker(runtime.helper('pager'), { workerData: { mode: 'copy', seed: 2 } })
  try {
    t.deepEqual(await runtime.touch(region, [2 * PAGE + 1]), [patternByte(2 * PAGE, PAGE, 1, 2)])
  } finally {
    uffd.close()
    region.close()
  }
  await sleep(200)
  t.deepEqual(errors, [])
})

define(
  'a handler module with a syntax error: ERR_UFFD_WORKER names the file and line, and its cause is the SyntaxError',
  async (t, runtime) => {
    const bad = join(dir, 'bad-pager.mjs')
    writeFileSync(bad, 'export default function (fault) {\n  fault.copy(\n}\n')
    const uffd = new Userfaultfd()
    try {
      const error = (await t.throwsAsync(uffd.handleInWorker(bad), { code: 'ERR_UFFD_WORKER' })) as UffdError
      t.true(error.message.includes(`${bad}:3`), error.message)
      if (runtime.name === 'bun') {
        // Bun's parse error is a BuildMessage, not an Error: the cause is what Bun threw.
        t.regex(String((error.cause as Error).message), /Unexpected/)
      } else {
        t.true(error.cause instanceof Error)
        t.is((error.cause as Error).name, 'SyntaxError')
      }
    } finally {
      uffd.close()
    }
  },
)

/**
 * Reads page after page until a read waits for a handler (its ERR_UFFD_NO_HANDLER comes): a
 * handler removed a moment ago may still serve, or abandon, the faults of that moment.
 */
async function firstUnserved(uffd: Userfaultfd, runtime: Runtime, region: Region, from: number) {
  for (let page = from; page < region.size / PAGE; page++) {
    const read = runtime.touch(region, [page * PAGE + 5])
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

define(
  'handleInWorker resolves with what removes the worker: off() terminates it, faults then wait for a new handler, and its exit is no ERR_UFFD_HANDLER_GONE',
  async (t, runtime) => {
    const { uffd, region } = anonymous(16)
    const errors: UffdError[] = []
    uffd.on('error', (error) => errors.push(error))
    const served = await within(uffd.handleInWorker(runtime.helper('pager'), { workerData: { mode: 'copy', seed: 3 } }), 'the first worker')
    try {
      t.deepEqual(await runtime.touch(region, [5]), [patternByte(0, PAGE, 5, 3)])
      served.off()
      const { read, page } = await firstUnserved(uffd, runtime, region, 1)
      await within(uffd.handleInWorker(runtime.helper('pager'), { workerData: { mode: 'copy', seed: 4 } }), 'the second worker')
      t.deepEqual(await read, [patternByte(page * PAGE, PAGE, 5, 4)])
    } finally {
      uffd.close()
      region.close()
    }
    const exits = errors.filter((error) => /exited with code/.test(error.message))
    t.deepEqual(exits, [], 'a worker removed on purpose is no news')
  },
)

/** A handler module that takes a minute to load: its worker is still starting when the test aborts. */
const slowModule = `data:text/javascript,${encodeURIComponent('await new Promise((resolve) => setTimeout(resolve, 60_000))\nexport default () => {}')}`

define(
  'handleInWorker({ signal }): aborting a start rejects with ABORT_ERR, terminates the new worker, and the serving one serves on',
  async (t, runtime) => {
    const { uffd, region } = anonymous(8)
    const errors: UffdError[] = []
    uffd.on('error', (error) => errors.push(error))
    await within(uffd.handleInWorker(runtime.helper('pager'), { workerData: { mode: 'copy', seed: 5 } }), 'the serving worker')
    const controller = new AbortController()
    const starting = uffd.handleInWorker(slowModule, { signal: controller.signal })
    setTimeout(() => controller.abort(), 50)
    const aborted = await t.throwsAsync(within(starting, 'the abort'))
    t.true(isAbortError(aborted), String(aborted))
    const already = await t.throwsAsync(uffd.handleInWorker(runtime.helper('pager'), { signal: AbortSignal.abort() }))
    t.true(isAbortError(already), 'an aborted signal rejects at once')
    t.throws(() => uffd.handleInWorker(runtime.helper('pager'), { signal: 'soon' as never }), { code: 'ERR_INVALID_ARG_TYPE' })
    try {
      t.deepEqual(await runtime.touch(region, [3 * PAGE + 5]), [patternByte(3 * PAGE, PAGE, 5, 5)])
    } finally {
      uffd.close()
      region.close()
    }
    t.deepEqual(
      errors.map((error) => error.code),
      [],
      'an aborted worker is no ERR_UFFD_WORKER',
    )
  },
)

define(
  'handleInWorker({ signal }): an aborted start ends its expectation, so a fault with no handler is said at once',
  async (t, runtime) => {
    const { uffd, region } = anonymous(4, { timeoutMs: 20_000 })
    const controller = new AbortController()
    const starting = uffd.handleInWorker(slowModule, { signal: controller.signal })
    controller.abort(new Error('changed my mind'))
    const aborted = (await t.throwsAsync(within(starting, 'the abort'))) as Error
    t.true(isAbortError(aborted))
    t.is((aborted.cause as Error).message, 'changed my mind', "the signal's reason is the cause")
    try {
      const noHandler = nextError(uffd, 5_000)
      const read = runtime.touch(region, [PAGE + 5])
      t.is((await noHandler).code, 'ERR_UFFD_NO_HANDLER', 'not a silent wait for the aborted worker')
      uffd.handle((fault) => {
        fault.copy(patternPage(fault.offset, PAGE))
      })
      t.deepEqual(await read, [patternByte(PAGE, PAGE, 5)])
    } finally {
      uffd.close()
      region.close()
    }
  },
)

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
// Bun loads TypeScript itself (Node.js 20 cannot): a typed module serves there as it is.
if ('Bun' in globalThis) {
  handlerModules.push([
    'named.ts',
    'export function handler(fault: { copy(b: Uint8Array): number; offset: number; region: { pageSize: number } }): void { FILL(25) }',
    25,
  ])
}

const fill = (seed: number) => `fault.copy(new Uint8Array(fault.region.pageSize).fill(fault.offset / fault.region.pageSize + ${seed}))`

for (const [name, source, seed] of handlerModules) {
  define(`handleInWorker serves with a handler module like ${name}: ${source.slice(0, 40)}...`, async (t) => {
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

define('a handler module with neither a default export nor `handler` is refused, saying which exports it needs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-handler-'))
  const path = join(dir, 'neither.cjs')
  writeFileSync(path, 'module.exports = { serve(fault) {} }')
  const uffd = new Userfaultfd()
  try {
    const error = (await t.throwsAsync(uffd.handleInWorker(path), { instanceOf: UffdError })) as UffdError | undefined
    t.is(error?.code, 'ERR_UFFD_WORKER')
    t.regex(error?.message ?? '', /as its default export or as `handler`/)
  } finally {
    uffd.close()
    rmSync(dir, { recursive: true, force: true })
  }
})

for (const direct of [true, false]) {
  const how = direct ? 'reading the fd itself' : 'fed by the fault loop thread'
  define(`a handler worker ${how}, terminated mid-fault: its faults get the fallback, and a new worker serves`, async (t, runtime) => {
    const { uffd, region } = anonymous(8, { timeoutMs: 0 })
    const errors: string[] = []
    uffd.on('error', (error) => errors.push(error.code))
    const pager = runtime.helper('pager')
    await uffd.handleInWorker(pager, { workerData: { mode: 'never' }, direct })
    try {
      const stuck = runtime.touch(region, [PAGE + 5])
      await within(
        (async () => {
          while (uffd.stats.inFlight < 1) await new Promise((resolve) => setTimeout(resolve, 10))
        })(),
        'a fault in the first worker',
      )
      // A second handleInWorker terminates the first worker, which still holds the fault.
      await uffd.handleInWorker(pager, { workerData: { mode: 'copy' }, direct })
      t.deepEqual(await stuck, [0], 'the orphaned fault got the fallback')
      t.deepEqual(await runtime.touch(region, [3 * PAGE + 5]), [patternByte(3 * PAGE, PAGE, 5)], 'the new worker serves')
      await within(
        (async () => {
          while (!errors.includes('ERR_UFFD_HANDLER_GONE')) await new Promise((resolve) => setTimeout(resolve, 10))
        })(),
        'the handler-gone error',
      )
      t.is(uffd.stats.fallbacks, 1)
    } finally {
      uffd.close()
      region.close()
    }
  })
}
