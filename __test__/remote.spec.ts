// Serving another process's memory: a C peer maps memory, registers it with its own userfaultfd,
// and hands the fd over a Unix socket in Firecracker's handshake; TypeScript serves its pages
// from a file. Also: adoptFd, the peer killed mid-fault, and malformed handshakes.
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { listen, type UffdError } from 'userfaultfd'
import { patternPage, within } from './helpers/harness'
import { buildPeer, startPeer as start } from './helpers/peer'

const PAGE = 4096
const PAGES = 64
const dir = mkdtempSync(join(tmpdir(), 'uffd-remote-'))
const peerBinary = buildPeer(dir)

/** The snapshot file: page p holds the tests' pattern for page p. */
const snapshot = join(dir, 'snapshot')
writeFileSync(snapshot, patternPage(0, PAGE, PAGES + 1))

test.after.always(() => rmSync(dir, { recursive: true, force: true }))

/** The peer, sending the body of current Firecracker (1.12+: page_size and page_size_kib, bytes). */
const startPeer = (socket: string, mode: string) => start(peerBinary, socket, mode, PAGES)

test('firecracker handshake: a peer process reads every page, served from a snapshot file', async (t) => {
  const socket = join(dir, 'serve.sock')
  const listener = listen(socket)
  const peer = startPeer(socket, 'serve')
  const { uffd, regions, offsets, peer: who } = await within(listener.accept(), 'the handshake')
  listener.close()
  t.is(who?.pid, peer.child.pid)
  t.is(who?.uid, process.getuid?.())
  t.is(regions.length, 1)
  t.is(regions[0]?.kind, 'remote')
  t.is(regions[0]?.size, PAGES * PAGE)
  t.deepEqual(offsets, [PAGE])
  t.throws(() => regions[0]?.buffer, { code: 'EINVAL' }, 'no buffer over another process’s memory')
  const file = openSync(snapshot, 'r')
  const page = Buffer.alloc(PAGE)
  uffd.on('error', (error) => t.is(error.code, 'ERR_UFFD_PEER_GONE', 'the peer exits when it is done'))
  uffd.handle((fault) => {
    const index = regions.indexOf(fault.region)
    readSync(file, page, 0, PAGE, (offsets[index] ?? 0) + fault.offset)
    fault.copy(page)
  })
  const { code, out } = await peer.exit
  closeSync(file)
  t.is(code, 0, out)
  t.regex(out, new RegExp(`read ${PAGES} pages, 0 wrong bytes`))
  t.is(uffd.stats.faults.missing, PAGES)
  uffd.close()
})

test('a peer killed mid-fault: the userfaultfd closes itself and says so', async (t) => {
  const socket = join(dir, 'hang.sock')
  const listener = listen(socket)
  const peer = startPeer(socket, 'hang')
  const { uffd } = await within(listener.accept(), 'the handshake')
  listener.close()
  let faulted: () => void = () => {}
  const fault = new Promise<void>((resolve) => {
    faulted = resolve
  })
  uffd.handle(() => {
    faulted()
    return new Promise(() => {})
  })
  const gone = within(new Promise<UffdError>((resolve) => uffd.on('error', resolve)), 'the peer-gone event')
  const closed = within(new Promise<void>((resolve) => uffd.on('close', resolve)), 'the close event')
  await within(fault, 'the peer’s fault')
  peer.child.kill('SIGKILL')
  t.is((await gone).code, 'ERR_UFFD_PEER_GONE')
  await closed
  t.true(uffd.closed)
  await peer.exit
})

test('events of the peer: its madvise, mremap and munmap arrive as remove, remap and unmap events', async (t) => {
  const socket = join(dir, 'events.sock')
  const listener = listen(socket, { features: ['EVENT_REMOVE', 'EVENT_REMAP', 'EVENT_UNMAP'] })
  const peer = startPeer(socket, 'events')
  const { uffd, regions } = await within(listener.accept(), 'the handshake')
  listener.close()
  const seen: string[] = []
  uffd.on('remove', (e) => seen.push(`remove ${e.offset} ${e.length} ${e.region === regions[0]}`))
  uffd.on('remap', (e) => seen.push(`remap ${e.offset} ${e.length} ${e.to - e.start}`))
  uffd.on('unmap', (e) => seen.push(`unmap ${e.offset} ${e.length}`))
  uffd.on('error', (e) => seen.push(`error ${e.code}`))
  uffd.handle(() => {})
  const { code, out } = await peer.exit
  t.is(code, 0, out)
  await within(
    (async () => {
      while (seen.length < 6) await new Promise((resolve) => setTimeout(resolve, 5))
    })(),
    'five events and the hang-up',
  )
  t.deepEqual(seen, [
    `remove 0 ${PAGE} true`,
    // mremap onto a mapped target: the target is unmapped first, and the old range after the move.
    `unmap ${32 * PAGE} ${4 * PAGE}`,
    `remap ${4 * PAGE} ${4 * PAGE} ${28 * PAGE}`,
    `unmap undefined ${4 * PAGE}`,
    `unmap ${8 * PAGE} ${4 * PAGE}`,
    // The peer exits when it is done; events read before the handler came are not lost.
    'error ERR_UFFD_PEER_GONE',
  ])
  t.is(uffd.stats.events, 5)
  uffd.close()
})

for (const [mode, reason] of [
  ['bad-json', /not a JSON array/],
  ['no-fd', /no file descriptor/],
  ['overlap', /overlap/],
] as const) {
  test(`a malformed handshake (${mode}) is refused with a clear error`, async (t) => {
    const socket = join(dir, `${mode}.sock`)
    const listener = listen(socket)
    const peer = startPeer(socket, mode)
    const error = await t.throwsAsync(within(listener.accept(), 'the refusal'), { message: reason })
    t.is((error as UffdError).code, 'EINVAL')
    listener.close()
    peer.child.kill()
    await peer.exit
  })
}

test('close() stops a listener with a pending accept', async (t) => {
  const listener = listen(join(dir, 'idle.sock'))
  const pending = listener.accept()
  listener.close()
  await t.throwsAsync(within(pending, 'the rejection'), { code: 'EBADF', message: /the listener is closed/ })
})

test('adoptFd refuses bad ranges and fds before anything', (t) => {
  const ranges = [{ address: 0x10000, length: PAGE, pageSize: PAGE }]
  t.throws(() => listen({} as unknown as string), { instanceOf: TypeError }) // (a number is an inherited socket's fd)
  t.throws(() => require('userfaultfd').adoptFd(-1, { ranges }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => require('userfaultfd').adoptFd(987, { ranges }), { code: 'EBADF' })
  t.throws(() => require('userfaultfd').adoptFd(0, { ranges: 'x' }), { instanceOf: TypeError })
})
