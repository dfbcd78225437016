// What a Node developer expects of a long-lived handle, and trips on when it is not so: 'close'
// on the next tick, `closed` that says what close() did, handlers that can be removed, and
// `{ signal }` on everything that waits.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { listen, Region, type UffdError, Userfaultfd } from 'userfaultfd'
import { nextError, patternByte, patternPage, type Reader, within, withReader } from './helpers/harness'

const PAGE = 4096
const pager = join(__dirname, 'helpers', 'pager.js')

function anonymous(pages: number, options?: ConstructorParameters<typeof Userfaultfd>[0]) {
  const uffd = new Userfaultfd(options)
  const region = Region.anonymous(pages * PAGE)
  uffd.register(region)
  return { uffd, region }
}

test("'close' is emitted on the next tick, once, as Node's handles do", async (t) => {
  const uffd = new Userfaultfd()
  const order: string[] = []
  uffd.on('close', () => order.push('close'))
  uffd.close()
  uffd.close()
  order.push('close() returned')
  t.deepEqual(order, ['close() returned'], 'not inside close()')
  t.true(uffd.closed, 'closed at once all the same')
  await new Promise<void>((resolve) => setImmediate(resolve))
  t.deepEqual(order, ['close() returned', 'close'])
})

test('closed is true after close() on a handle from Userfaultfd.attach; the owner stays open and serves', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const attached = Userfaultfd.attach(uffd.share())
  t.false(attached.closed)
  attached.close()
  t.true(attached.closed)
  t.false(uffd.closed, 'the fd is the owner’s')
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE))
  })
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [PAGE + 5] })).bytes, [patternByte(PAGE, PAGE, 5)])
  })
  t.true(uffd.closed)
  await within(new Promise((resolve) => setImmediate(resolve)), 'a tick')
})

test('handle() returns what removes the handler: after off(), a fault waits for the next handler (ERR_UFFD_NO_HANDLER) and it serves it', async (t) => {
  const { uffd, region } = anonymous(4)
  const first: number[] = []
  const served = uffd.handle((fault) => {
    first.push(fault.offset)
    fault.copy(patternPage(fault.offset, PAGE, 1, 1))
  })
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [5] })).bytes, [patternByte(0, PAGE, 5, 1)])
    served.off()
    served.off() // a second off() is nothing
    const noHandler = nextError(uffd)
    const read = reader.read(region, { offsets: [2 * PAGE + 5] })
    t.is((await noHandler).code, 'ERR_UFFD_NO_HANDLER')
    t.false(await reader.answersWithin(read, 100), 'the fault waits for a handler')
    uffd.handle((fault) => {
      fault.copy(patternPage(fault.offset, PAGE, 1, 2))
    })
    t.deepEqual((await read).bytes, [patternByte(2 * PAGE, PAGE, 5, 2)])
    t.deepEqual(first, [0], 'the removed handler saw no fault after off()')
  })
})

test('using removes a handle() handler at the end of the block; off() of a replaced handler leaves its successor be', async (t) => {
  const { uffd, region } = anonymous(4)
  const seen: string[] = []
  const outer = uffd.handle(() => {
    seen.push('outer')
  })
  {
    using _inner = uffd.handle((fault) => {
      seen.push('inner')
      fault.copy(patternPage(fault.offset, PAGE))
    })
    outer.off() // replaced already: nothing
    await withReader([], async (reader) => {
      t.deepEqual((await reader.read(region, { offsets: [PAGE + 5] })).bytes, [patternByte(PAGE, PAGE, 5)])
    })
  }
  t.deepEqual(seen, ['inner'])
  t.is(uffd.stats.queued, 0)
  await withReader([uffd, region], async (reader) => {
    const noHandler = nextError(uffd)
    const read = reader.read(region, { offsets: [3 * PAGE] })
    t.is((await noHandler).code, 'ERR_UFFD_NO_HANDLER', 'the block removed its handler')
    uffd.handle((fault) => {
      fault.zero()
    })
    t.deepEqual((await read).bytes, [0])
  })
})

/**
 * Reads page after page until a read waits for a handler (its ERR_UFFD_NO_HANDLER comes): a
 * handler removed a moment ago may still serve, or abandon, the faults of that moment.
 */
async function firstUnserved(uffd: Userfaultfd, reader: Reader, region: Region, from: number) {
  for (let page = from; page < region.size / PAGE; page++) {
    const read = reader.read(region, { offsets: [page * PAGE + 5] })
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
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [5] })).bytes, [patternByte(0, PAGE, 5, 3)])
    served.off()
    const { read, page } = await firstUnserved(uffd, reader, region, 1)
    await within(uffd.handleInWorker(pager, { workerData: { mode: 'copy', seed: 4 } }), 'the second worker')
    t.deepEqual((await read).bytes, [patternByte(page * PAGE, PAGE, 5, 4)])
  })
  const exits = errors.filter((error) => /exited with code/.test(error.message))
  t.deepEqual(exits, [], 'a worker removed on purpose is no news')
})

/** A handler module that takes a minute to load: its worker is still starting when the test aborts. */
const slowModule = `data:text/javascript,${encodeURIComponent('await new Promise((resolve) => setTimeout(resolve, 60_000))\nexport default () => {}')}`

function isAbortError(error: unknown): boolean {
  const { name, code } = error as { name?: string; code?: string }
  return name === 'AbortError' && code === 'ABORT_ERR'
}

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
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [3 * PAGE + 5] })).bytes, [patternByte(3 * PAGE, PAGE, 5, 5)])
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
  await withReader([uffd, region], async (reader) => {
    const noHandler = nextError(uffd, 5_000)
    const read = reader.read(region, { offsets: [PAGE + 5] })
    t.is((await noHandler).code, 'ERR_UFFD_NO_HANDLER', 'not a silent wait for the aborted worker')
    uffd.handle((fault) => {
      fault.copy(patternPage(fault.offset, PAGE))
    })
    t.deepEqual((await read).bytes, [patternByte(PAGE, PAGE, 5)])
  })
})

test('accept({ signal }): aborting rejects with ABORT_ERR and closes the listener; an aborted signal does at once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-habits-'))
  try {
    const listener = listen(join(dir, 'abort.sock'))
    const controller = new AbortController()
    const pending = listener.accept({ signal: controller.signal })
    controller.abort()
    t.true(isAbortError(await t.throwsAsync(within(pending, 'the abort'))))
    await t.throwsAsync(within(listener.accept(), 'the closed listener'), { code: 'EBADF', message: /the listener is closed/ })
    const other = listen(join(dir, 'already.sock'))
    t.true(isAbortError(await t.throwsAsync(other.accept({ signal: AbortSignal.abort() }))))
    await t.throwsAsync(within(other.accept(), 'the closed listener'), { code: 'EBADF' })
    await t.throwsAsync(listen(join(dir, 'bad.sock')).accept({ signal: 1 as never }), { code: 'ERR_INVALID_ARG_TYPE' })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('receive(fd, { signal }): aborting rejects with ABORT_ERR at once while the peer says nothing; its hang-up then ends the read', async (t) => {
  // A child whose fd 3 is a connected Unix socket that blocks (a stdio pipe; Node's own sockets
  // are non-blocking), and whose other end this test holds and never writes to.
  const script = `
    const { receive } = require('userfaultfd')
    const say = (what) => console.log(JSON.stringify(what))
    const controller = new AbortController()
    receive(3, { signal: controller.signal }).then(() => say({ adopted: true }), (e) => say({ name: e.name, code: e.code }))
    setTimeout(() => controller.abort(), 100)
    receive(3, { signal: AbortSignal.abort() }).catch((e) => say({ at: 'once', code: e.code }))`
  const child = spawn(process.execPath, ['-e', script], {
    cwd: join(__dirname, '..', '..', '..'),
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout?.on('data', (chunk) => {
    out += chunk
  })
  child.stderr?.on('data', (chunk) => {
    out += chunk
  })
  const exited = within(new Promise<number | null>((resolve) => child.on('close', resolve)), 'the child')
  const lines = () => out.split('\n').filter((line) => line.startsWith('{'))
  await within(
    (async () => {
      while (lines().length < 2) await new Promise((resolve) => setTimeout(resolve, 20))
    })(),
    'the two rejections',
  )
  t.deepEqual(
    lines()
      .map((line) => JSON.parse(line))
      .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
    [
      { at: 'once', code: 'ABORT_ERR' },
      { code: 'ABORT_ERR', name: 'AbortError' },
    ],
  )
  ;(child.stdio[3] as Socket).destroy()
  t.is(await exited, 0, out)
})
