// Another process's memory served from a script: as the README says, by a handler worker, with
// listen()'s options, and the SIGBUS fallback of an adopted userfaultfd. The C peer (peer.c) is the
// other process; the serving script runs in its own process (scenario-child.ts) to its end.

import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { listen } from 'userfaultfd'
import { patternPage, spawnCollecting, until, within } from './helpers/harness'

const PAGE = 4096

const peerDir = mkdtempSync(join(tmpdir(), 'uffd-remote-peer-'))

const peerBinary = join(peerDir, 'peer')

execFileSync('cc', ['-O2', '-Wall', '-o', peerBinary, join(__dirname, '..', '..', '..', '__test__', 'helpers', 'peer.c')])

const PEER_PAGES = 64

const snapshot = join(peerDir, 'snapshot')

writeFileSync(snapshot, patternPage(0, PAGE, PEER_PAGES + 1))

test.after.always(() => rmSync(peerDir, { recursive: true, force: true }))

function startPeer(socket: string) {
  return spawnCollecting(peerBinary, [socket, 'serve', String(PEER_PAGES)], 'the peer process', 30_000)
}

/** Runs a scenario-child scenario that serves the C peer from the snapshot; both run to their end. */
async function servePeer(scenario: string, socket: string) {
  const args = [join(__dirname, 'helpers', 'scenario-child.js'), scenario, `${socket},${snapshot}`]
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
