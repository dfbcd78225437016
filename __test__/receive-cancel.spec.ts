// A handshake that waits can be stopped: an aborted signal or a closed listener ends accept() and
// receive() at once, leaves no thread of libuv's pool blocked (its pool has 4 threads: a fifth
// handshake would wait for ever behind 4 stuck ones), and closes what the handshake held. Real
// sockets, the C peer (helpers/peer.c) for the handshakes that complete.

import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, unlinkSync } from 'node:fs'
import { connect, createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test, { type ExecutionContext } from 'ava'
import { listen, receive } from 'userfaultfd'
import { isAbortError, within } from './helpers/harness'
import { buildPeer, startPeer } from './helpers/peer'

const PAGE = 4096
const PAGES = 4
/** Threads of libuv's pool: as many handshakes stuck would starve the next. */
const POOL = Number(process.env.UV_THREADPOOL_SIZE ?? 4)
const dir = mkdtempSync(join(tmpdir(), 'uffd-cancel-'))
const peerBinary = buildPeer(dir)

test.after.always(() => rmSync(dir, { recursive: true, force: true }))

let sockets = 0
const socketPath = () => join(dir, `s${++sockets}.sock`)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const openFds = () => readdirSync('/proc/self/fd').length

/** The C peer: connects to `path`, sends a valid handshake, then waits for the hang-up. */
const peerAt = (path: string) => startPeer(peerBinary, path, 'idle', PAGES)

/**
 * A Unix socket server whose connections Node never reads (`pauseOnConnect`): `next()` gives the
 * fd of the next one, for receive(fd), and the Socket that owns it.
 */
async function fdServer(t: ExecutionContext, path: string): Promise<{ next: () => Promise<{ fd: number; socket: Socket }> }> {
  const waiting: Socket[] = []
  const wanted: ((socket: Socket) => void)[] = []
  const server = createServer({ pauseOnConnect: true }, (socket) => {
    t.teardown(() => socket.destroy())
    const take = wanted.shift()
    if (take) take(socket)
    else waiting.push(socket)
  })
  await new Promise<void>((resolve) => server.listen(path, resolve))
  t.teardown(() => server.close())
  const next = async () => {
    const socket = waiting.shift() ?? (await within(new Promise<Socket>((resolve) => wanted.push(resolve)), 'a connection'))
    return { fd: (socket as unknown as { _handle: { fd: number } })._handle.fd, socket }
  }
  return { next }
}

/** A client that connects to `path` and says nothing; `ended` resolves when the other end shuts down or closes. */
async function silentClient(t: ExecutionContext, path: string): Promise<{ client: Socket; ended: Promise<void> }> {
  const client = connect(path)
  t.teardown(() => client.destroy())
  const ended = new Promise<void>((resolve) => {
    client.on('end', resolve)
    client.on('close', () => resolve())
  })
  client.on('error', () => {})
  // Flowing, so that the other end's shutdown is heard as 'end'.
  client.resume()
  await within(new Promise<void>((resolve) => client.on('connect', resolve)), 'the connection')
  return { client, ended }
}

function assertAbortError(t: ExecutionContext, error: unknown, reason: unknown): void {
  const e = error as { name?: string; code?: string; cause?: unknown }
  t.is(e.name, 'AbortError', String(error))
  t.is(e.code, 'ABORT_ERR')
  t.is(e.cause, reason, "the signal's reason is the cause")
}

test('receive: an aborted signal rejects at once, reads nothing, and a receive on the same fd then adopts', async (t) => {
  const path = socketPath()
  const { next } = await fdServer(t, path)
  const peer = peerAt(path)
  const { fd, socket } = await next()
  const reason = new Error('not now')
  assertAbortError(t, await t.throwsAsync(receive(fd, { signal: AbortSignal.abort(reason) })), reason)
  const { uffd, regions, peer: who } = await within(receive(fd), 'the handshake after the abort')
  t.is(who?.pid, peer.child.pid)
  t.is(regions[0]?.size, PAGES * PAGE)
  uffd.close()
  socket.destroy()
  t.is((await peer.exit).code, 0, 'the peer sees the hang-up and ends')
})

test('receive: aborting while the peer says nothing rejects at once, frees the pool thread and closes what it held', async (t) => {
  const path = socketPath()
  const { next } = await fdServer(t, path)
  const quiet = await Promise.all(Array.from({ length: POOL }, () => silentClient(t, path)))
  const held = await Promise.all(quiet.map(() => next()))
  const before = openFds()
  const controller = new AbortController()
  const pending = held.map(({ fd }) =>
    receive(fd, { signal: controller.signal }).then(
      () => t.fail('adopted'),
      (error: unknown) => error,
    ),
  )
  await sleep(100)
  const reason = new Error('stop waiting')
  controller.abort(reason)
  for (const error of await within(Promise.all(pending), 'the rejections')) assertAbortError(t, error, reason)

  const peer = peerAt(path)
  const { fd, socket } = await next()
  const { uffd } = await within(receive(fd), `a handshake after ${POOL} aborted ones (a pool thread is free)`)
  uffd.close()
  socket.destroy()
  t.is((await peer.exit).code, 0)

  // The duplicates of the fds and the eventfds the receives waited on are closed.
  await within(
    (async () => {
      while (openFds() > before) await sleep(20)
    })(),
    `the fds back to ${before} (now ${openFds()})`,
  )
  t.true(
    quiet.every(({ client }) => !client.readableEnded),
    'nothing was read or shut down: the sockets are as they were',
  )
})

test('receive: aborting a handshake half read cuts the read short and shuts the socket down', async (t) => {
  const path = socketPath()
  const { next } = await fdServer(t, path)
  const { client, ended } = await silentClient(t, path)
  const { fd, socket } = await next()
  const controller = new AbortController()
  const pending = receive(fd, { signal: controller.signal })
  client.write('[{"base_host_virt_addr":')
  await sleep(100)
  const reason = new Error('too slow')
  controller.abort(reason)
  assertAbortError(t, await t.throwsAsync(within(pending, 'the rejection')), reason)
  await within(ended, 'the peer told that the handshake is over')
  socket.destroy()
})

test('accept: closing the listener rejects a pending accept at once, with or without a peer that says nothing', async (t) => {
  const idle = listen(socketPath())
  const waiting = idle.accept()
  await sleep(50)
  idle.close()
  await t.throwsAsync(within(waiting, 'the accept of a closed listener'), { code: 'EBADF', message: /the listener is closed/ })

  const path = socketPath()
  const listener = listen(path)
  const connected = listener.accept()
  const { ended } = await silentClient(t, path)
  await sleep(100)
  listener.close()
  await t.throwsAsync(within(connected, 'the accept of a closed listener'), { code: 'EBADF', message: /the listener is closed/ })
  await within(ended, 'the connection closed with its listener')
})

test('accept: aborting rejects with the reason and leaves no thread blocked, even with a connected peer; the next listener accepts', async (t) => {
  const reason = new Error('changed my mind')
  assertAbortError(t, await t.throwsAsync(listen(socketPath()).accept({ signal: AbortSignal.abort(reason) })), reason)

  const controller = new AbortController()
  const started = await Promise.all(
    Array.from({ length: POOL }, async () => {
      const path = socketPath()
      const listener = listen(path)
      const accepted = listener.accept({ signal: controller.signal }).then(
        () => t.fail('adopted'),
        (error: unknown) => error,
      )
      return { accepted, ...(await silentClient(t, path)) }
    }),
  )
  await sleep(100)
  controller.abort(reason)
  for (const { accepted } of started) assertAbortError(t, await within(accepted, 'the rejection'), reason)
  await within(Promise.all(started.map(({ ended }) => ended)), 'the peers’ connections closed')

  const path = socketPath()
  const listener = listen(path)
  const peer = peerAt(path)
  const { uffd, peer: who } = await within(listener.accept(), `a handshake after ${POOL} aborted accepts`)
  listener.close()
  t.is(who?.pid, peer.child.pid)
  uffd.close()
  t.is((await peer.exit).code, 0)
})

test('close() removes the socket file listen() made, and leaves one that replaced it', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-listen-'))
  try {
    const path = join(dir, 'uffd.sock')
    listen(path).close()
    t.deepEqual(readdirSync(dir), [], 'the socket file is gone')
    const first = listen(path)
    t.throws(() => listen(path), { code: 'EADDRINUSE' }, 'a socket a live listener has is not replaced')
    unlinkSync(path) // someone removed it, and another listener made a new one
    const second = listen(path)
    first.close()
    t.deepEqual(readdirSync(dir), ['uffd.sock'], "the second listener's socket stays")
    second.close()
    t.deepEqual(readdirSync(dir), [])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
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
