// Field reliability: what a new user's ordinary mistakes and a real client's habits met. No fault
// waits forever, nothing is silent, and a process ends when its script does. Real faults from
// worker threads and child processes; the bounds on time catch hangs, they do not measure speed.
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { listen, Region, Source, type UffdError, Userfaultfd } from 'userfaultfd'
import { nextError, patternByte, patternPage, spawnCollecting, until, within, withReader } from './helpers/harness'

const PAGE = 4096
const dir = mkdtempSync(join(tmpdir(), 'uffd-field-'))
const pager = join(__dirname, 'helpers', 'pager.js')
test.after.always(() => rmSync(dir, { recursive: true, force: true }))

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

interface Run {
  status: number | null
  signal: NodeJS.Signals | null
  ms: number
  lines: Array<Record<string, unknown>>
  stderr: string
}

/** Runs a scenario of field-child.js in its own process, with a generous bound on its time. */
function runChild(scenario: string, arg?: string, prefix: string[] = []): Run {
  const [command, ...args] = [...prefix, process.execPath, join(__dirname, 'helpers', 'field-child.js'), scenario, ...(arg ? [arg] : [])]
  const started = Date.now()
  const result = spawnSync(command as string, args, { encoding: 'utf8', timeout: 60_000, cwd: join(__dirname, '..', '..', '..') })
  const lines = result.stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
  return { status: result.status, signal: result.signal, ms: Date.now() - started, lines, stderr: result.stderr }
}

// Liveness: a process ends when its script does, and exit never waits for a fault.

test('a script that uses handleInWorker and forgets close() ends by itself', (t) => {
  const run = runChild('forget-close-worker')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ byte: patternByte(PAGE, PAGE, 5) }])
  t.true(run.ms < 20_000, `ended after ${run.ms} ms`)
})

test('a script whose thread reads the fd itself (direct) and forgets close() ends by itself', (t) => {
  const run = runChild('forget-close-direct')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ byte: patternByte(PAGE, PAGE, 5) }])
  t.true(run.ms < 20_000, `ended after ${run.ms} ms`)
})

test('process.exit() returns promptly while a worker sleeps in a fault nothing serves (timeoutMs: 0)', (t) => {
  const run = runChild('exit-with-fault')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ inFlight: 1 }])
  t.true(run.ms < 20_000, `exited after ${run.ms} ms`)
})

test('the end of a script returns promptly while an unref’d worker sleeps in a fault nothing serves', (t) => {
  const run = runChild('end-with-fault')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ inFlight: 1 }])
  t.true(run.ms < 20_000, `ended after ${run.ms} ms`)
})

// No handler: said at once, and the thread that would have to install one is not left waiting.

test('a fault with no handler emits ERR_UFFD_NO_HANDLER at once; a handler installed later serves it', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  await withReader([uffd, region], async (reader) => {
    const error = nextError(uffd, 5_000)
    const read = reader.read(region, { offsets: [PAGE + 1] })
    const said = await error
    t.is(said.code, 'ERR_UFFD_NO_HANDLER')
    t.regex(said.message, /handleInWorker/)
    t.is(said.fault?.offset, PAGE)
    uffd.handle((fault) => void fault.copy(patternPage(fault.offset, PAGE)))
    t.deepEqual((await read).bytes, [patternByte(PAGE, PAGE, 1)], 'the waiting fault reached the new handler')
  })
})

test('the thread that would install the handler touches registered memory with none: the fallback comes at once, not after timeoutMs', (t) => {
  const run = runChild('owner-no-handler')
  t.is(run.status, 0, run.stderr)
  t.is(run.lines[0]?.byte, 0)
  t.true((run.lines[0]?.ms as number) < 5_000, `the read took ${run.lines[0]?.ms} ms`)
  t.deepEqual(run.lines[1], { codes: ['ERR_UFFD_NO_HANDLER'], fallbacks: 1 })
})

test('a thread that faults with no handler, then closes at once: the ERR_UFFD_NO_HANDLER is heard before close() returns', (t) => {
  const run = runChild('owner-no-handler-then-close')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ byte: 0, codes: ['ERR_UFFD_NO_HANDLER'] }])
})

test('a thread that faults with no handler, then ends the script with nothing listening: the warning is printed on the way out', (t) => {
  const run = runChild('owner-no-handler-then-end')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ byte: 0, codes: [] }])
  t.regex(run.stderr, /ERR_UFFD_NO_HANDLER/)
})

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

// Sources: an I/O error is an error, at once; what cannot be read is refused when made.

test('a native source’s read error resolves the fault at once by the fallback and emits ERR_UFFD_SOURCE with the errno and the file', async (t) => {
  // /proc/self/mem from the last page of the main thread's stack on: the page after it is never
  // mapped (mappings go below the stack), so pread fails there with EIO, and only there.
  const stack = readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .find((line) => line.endsWith('[stack]'))
  const stackEnd = Number.parseInt(String(stack).split(/[- ]/)[1] ?? '', 16)
  t.true(Number.isSafeInteger(stackEnd), `the stack in /proc/self/maps: ${stack}`)
  const source = Source.file('/proc/self/mem', { offset: stackEnd - PAGE })
  const uffd = new Userfaultfd({ timeoutMs: 20_000 })
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region, { source })
  const handled: number[] = []
  uffd.handle((fault) => {
    handled.push(fault.offset)
  })
  await withReader([uffd, region], async (reader) => {
    const error = nextError(uffd, 5_000)
    const started = Date.now()
    t.deepEqual((await reader.read(region, { offsets: [PAGE + 3] })).bytes, [0], 'the fallback (ZEROPAGE) answered')
    t.true(Date.now() - started < 5_000, 'at once, not after timeoutMs')
    const said: UffdError = await error
    t.is(said.code, 'ERR_UFFD_SOURCE')
    t.regex(said.message, /\/proc\/self\/mem/)
    const cause = said.cause as UffdError
    t.is(cause.code, 'EIO')
    t.is(cause.errno, -5)
    t.is(cause.syscall, 'pread')
    t.deepEqual(handled, [], 'the failed fault is not handed to the handler as an ordinary one')
    t.is(uffd.stats.fallbacks, 1)
  })
})

test('Source.file refuses a directory and a file that cannot be read when it is made', (t) => {
  t.throws(() => Source.file(dir), { code: 'EISDIR', message: /directory/ })
  t.throws(() => Source.file('/proc/self/mem'), { code: 'EIO', message: /cannot be read/ })
})

// DONTWAKE is the kernel's: the thread sleeps until a wake.

test('a fault resolved with { wake: false } sleeps past the handler’s return until fault.wake()', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const held: Array<{ wake(): void }> = []
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE), { wake: false })
    held.push(fault)
  })
  const errors: string[] = []
  uffd.on('error', (error) => errors.push(error.code))
  await withReader([uffd, region], async (reader) => {
    const read = reader.read(region, { offsets: [2 * PAGE + 5] })
    await within(
      (async () => {
        while (held.length === 0) await sleep(5)
      })(),
      'the handler',
    )
    t.false(await reader.answersWithin(read, 300), 'still asleep after the handler returned')
    held[0]?.wake()
    t.deepEqual((await read).bytes, [patternByte(2 * PAGE, PAGE, 5)])
    t.deepEqual(errors, [])
  })
})

// A handler worker stuck in synchronous work is cut off by timeoutMs.

for (const direct of [true, false]) {
  test(`a handleInWorker handler stuck in synchronous work (direct: ${direct}) is cut off at timeoutMs: the fallback, and ERR_UFFD_TIMEOUT on the owner`, async (t) => {
    const uffd = new Userfaultfd({ timeoutMs: 500 })
    const region = Region.anonymous(4 * PAGE)
    uffd.register(region)
    await uffd.handleInWorker(pager, { workerData: { mode: 'spin' }, direct })
    const errors: string[] = []
    uffd.on('error', (error) => errors.push(error.code))
    await withReader([uffd, region], async (reader) => {
      const error = nextError(uffd, 10_000)
      t.deepEqual((await reader.read(region, { offsets: [5] })).bytes, [0])
      t.is((await error).code, 'ERR_UFFD_TIMEOUT')
      // A second fault while the worker is still stuck: cut off too.
      t.deepEqual((await reader.read(region, { offsets: [3 * PAGE] })).bytes, [0])
      t.true(uffd.stats.timeouts >= 2)
      t.deepEqual([...new Set(errors)], ['ERR_UFFD_TIMEOUT'])
    })
  })
}

// Handler workers: a replacement takes over only once it is ready.

test('a failed replacement handler worker leaves the old one serving, and no false ERR_UFFD_HANDLER_GONE', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const errors: string[] = []
  uffd.on('error', (error) => errors.push(error.code))
  await uffd.handleInWorker(pager, { workerData: { mode: 'copy', seed: 3 } })
  await t.throwsAsync(uffd.handleInWorker(join(dir, 'missing-pager.mjs')), { code: 'ERR_UFFD_WORKER' })
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [PAGE + 1] })).bytes, [patternByte(PAGE, PAGE, 1, 3)], 'the old worker serves')
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
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [2 * PAGE + 1] })).bytes, [patternByte(2 * PAGE, PAGE, 1, 2)])
  })
  await sleep(200)
  t.deepEqual(errors, [])
})

// Errors that say what happened.

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

test('with no "error" listener, the printed warning carries what the handler threw', (t) => {
  const run = runChild('warning-cause')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ byte: 0 }])
  t.regex(run.stderr, /ERR_UFFD_HANDLER_THREW|handler threw/)
  t.regex(run.stderr, /cause-7731/)
})

test('opened unprivileged with the defaults: user-mode-only, and one warning that says what then fails', (t) => {
  const run = runChild('open-default', undefined, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'])
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ userModeOnly: true }])
  t.regex(run.stderr, /UFFD_USER_MODE_ONLY/)
  t.regex(run.stderr, /write\(2\)/)
  t.is(run.stderr.match(/UFFD_USER_MODE_ONLY/g)?.length, 1)
})

// Another process's memory: served as the README says, never zeros it did not have.

const peerDir = mkdtempSync(join(tmpdir(), 'uffd-field-peer-'))
const peerBinary = join(peerDir, 'peer')
execFileSync('cc', ['-O2', '-Wall', '-o', peerBinary, join(__dirname, '..', '..', '..', '__test__', 'helpers', 'peer.c')])
const PEER_PAGES = 64
const snapshot = join(peerDir, 'snapshot')
writeFileSync(snapshot, patternPage(0, PAGE, PEER_PAGES + 1))
test.after.always(() => rmSync(peerDir, { recursive: true, force: true }))

function startPeer(socket: string) {
  return spawnCollecting(peerBinary, [socket, 'serve', String(PEER_PAGES)], 'the peer process', 30_000)
}

/** Runs a field-child scenario that serves the C peer from the snapshot; both run to their end. */
async function servePeer(scenario: string, socket: string) {
  const args = [join(__dirname, 'helpers', 'field-child.js'), scenario, `${socket},${snapshot}`]
  const server = spawnCollecting(process.execPath, args, 'the serving process', 30_000)
  await until(() => server.output().includes('listening'), 'the listener')
  const peer = await startPeer(socket).exit
  return { peer, served: await server.exit }
}

test('the README’s snippet for another process’s memory, run as written (no keepAlive), serves the peer to its end, then exits', async (t) => {
  const { peer, served } = await servePeer('serve-peer', join(peerDir, 'readme.sock'))
  t.is(peer.code, 0, peer.out)
  t.is(served.code, 0, served.out)
  t.regex(served.out, /"closed":true/)
  t.regex(served.out, new RegExp(`"copies":${PEER_PAGES}`))
})

test('another process’s memory served by a handler worker: the peer’s hang-up closes the owner, and the process ends', async (t) => {
  const { peer, served } = await servePeer('serve-peer-in-worker', join(peerDir, 'worker.sock'))
  t.is(peer.code, 0, peer.out)
  t.is(served.code, 0, served.out)
  t.regex(served.out, /"closed":true/)
  t.regex(served.out, /ERR_UFFD_PEER_GONE/)
  // Faults that came before the worker was ready waited for it: no false no-handler word.
  t.notRegex(served.out, /ERR_UFFD_NO_HANDLER/)
})

test('listen() takes the options a userfaultfd takes, spinMicros included (checked, not dropped)', (t) => {
  t.throws(() => listen(join(peerDir, 'spin.sock'), { spinMicros: -1 }), { code: 'ERR_OUT_OF_RANGE', message: /spinMicros/ })
  const listener = listen(join(peerDir, 'spin.sock'), { spinMicros: 50 })
  listener.close()
  t.pass()
})

test('an adopted userfaultfd falls back with SIGBUS by default: a handler that cannot serve stops the peer instead of giving it zeros', async (t) => {
  const socket = join(peerDir, 'sigbus.sock')
  const listener = listen(socket)
  const peer = startPeer(socket)
  const { uffd } = await within(listener.accept(), 'the handshake')
  listener.close()
  const errors: string[] = []
  uffd.on('error', (error) => errors.push(error.code))
  uffd.handle(() => {
    throw new Error('cannot serve this VM')
  })
  const { signal, out } = await peer.exit
  t.is(signal, 'SIGBUS', out)
  t.true(errors.includes('ERR_UFFD_HANDLER_THREW'))
  t.is(uffd.stats.resolutions.zeropage, 0, 'no zero page was mapped into the peer')
  uffd.close()
})
