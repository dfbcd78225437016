// Every example runs on small data and checks its own bytes: exit 0 is success. The Firecracker
// handler also gives up the way Firecracker needs: it kills a peer it cannot serve.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { patternPage, within } from './helpers/harness'
import { buildPeer, startPeer } from './helpers/peer'

const examples = join(__dirname, '..', '..', '..', 'examples')

for (const [name, args] of [
  ['demo', ['--mib', '32']],
  ['lazy-file', ['--small']],
  ['lazy-file', ['--small', '--max-resident-mib', '8']],
  ['http-range', ['--small']],
  ['object-store', ['--small']],
  ['object-store', ['--small', '--max-resident-mib', '8']],
  ['snapshot', ['--small']],
  ['firecracker-handler', ['--small']],
] as const) {
  test.serial(`examples/${name} ${args.join(' ')} runs and verifies what it read`, (t) => {
    const run = spawnSync(process.execPath, [join(examples, name, 'main.mjs'), ...args], { encoding: 'utf8', timeout: 120_000 })
    t.is(run.status, 0, `${run.stdout}\n${run.stderr}`)
    t.regex(run.stdout, /0 (mismatches|wrong bytes)/)
  })
}

const firecrackerHandler = join(examples, 'firecracker-handler', 'main.mjs')
const dir = mkdtempSync(join(tmpdir(), 'uffd-examples-'))
const peerBinary = buildPeer(dir)
test.after.always(() => rmSync(dir, { recursive: true, force: true }))

test.serial('examples/firecracker-handler --js (a JavaScript handler, no native source) runs and verifies what it read', (t) => {
  const run = spawnSync(process.execPath, [firecrackerHandler, '--small', '--js'], { encoding: 'utf8', timeout: 120_000 })
  t.is(run.status, 0, `${run.stdout}\n${run.stderr}`)
  t.regex(run.stdout, /read 256 pages, 0 wrong bytes/)
  t.regex(run.stdout, /"faults":256,"bytesMapped":1048576,"prefetchedBytes":0/)
})

/** Starts the handler on a socket of its own; resolves once it listens, with `exit` (its code and output). */
async function startHandler(socket: string, args: string[]) {
  const child: ChildProcess = spawn(process.execPath, [firecrackerHandler, '--socket', socket, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let listening: () => void = () => {}
  const ready = new Promise<void>((resolve) => {
    listening = resolve
  })
  child.stdout?.on('data', (chunk) => {
    out += chunk
    if (out.includes('listening on')) listening()
  })
  child.stderr?.on('data', (chunk) => {
    out += chunk
  })
  const exit = within(
    new Promise<{ code: number | null; out: string }>((resolve) => child.on('close', (code) => resolve({ code, out }))),
    'the handler',
  )
  await within(Promise.race([ready, exit]), 'the handler listening')
  return { exit }
}

test.serial('examples/firecracker-handler serves a peer until it exits, then prints a one-line JSON summary and exits 0', async (t) => {
  // The peer's memory starts at page 1 of the file: 16 pages of the tests' pattern after it.
  const mem = join(dir, 'snapshot.mem')
  writeFileSync(mem, patternPage(0, 4096, 17))
  const socket = join(dir, 'serve.sock')
  const handler = await startHandler(socket, ['--mem', mem])
  const peer = startPeer(peerBinary, socket, 'serve', 16)
  const { code: peerCode, out: peerOut } = await peer.exit
  t.is(peerCode, 0, peerOut)
  t.regex(peerOut, /read 16 pages, 0 wrong bytes/)
  const { code, out } = await handler.exit
  t.is(code, 0, out)
  const line = out.split('\n').find((l) => l.startsWith('{'))
  const summary = JSON.parse(line ?? '{}')
  t.like(summary, { peer: 'gone', pid: peer.child.pid, bytesMapped: 16 * 4096 })
  t.true(summary.handlerRss > 0 && summary.faults >= 0 && summary.faults <= 16, line)
})

test.serial(
  'examples/firecracker-handler exits 1 on a refused handshake and kills the peer that sent it (its pid comes with the refusal)',
  async (t) => {
    const socket = join(dir, 'refused.sock')
    const handler = await startHandler(socket, ['--mem', join(dir, 'missing.mem')])
    const peer = startPeer(peerBinary, socket, 'bad-json', 4)
    const { code, out } = await handler.exit
    t.is(code, 1, out)
    t.regex(
      out,
      new RegExp(`the handshake was refused \\(EINVAL: .*not a JSON array.*\\); (killed it|could not kill) \\(?pid ${peer.child.pid}`),
    )
    // Killed, or (the refusal hangs up on it) gone by itself first: never left waiting.
    const exit = await peer.exit
    t.true(exit.signal === 'SIGKILL' || exit.code === 0, `${exit.code} ${exit.signal}`)
  },
)

for (const [what, file, reason] of [
  ['a missing memory file', join(dir, 'missing.mem'), /cannot open the memory file .*missing\.mem \(ENOENT\)/],
  ['a memory file shorter than the regions', join(dir, 'short.mem'), /has 8192 bytes; the regions need 69632/],
] as const) {
  test.serial(`examples/firecracker-handler kills the peer it cannot serve (${what}) with SIGKILL and exits 1`, async (t) => {
    writeFileSync(join(dir, 'short.mem'), Buffer.alloc(8192))
    const socket = join(dir, `${what.length}.sock`)
    const handler = await startHandler(socket, ['--mem', file])
    // The peer sends its handshake, then touches its first page: it is frozen until served or killed.
    const peer = startPeer(peerBinary, socket, 'serve', 16)
    const { signal, out: peerOut } = await peer.exit
    t.is(signal, 'SIGKILL', peerOut)
    const { code, out } = await handler.exit
    t.is(code, 1, out)
    t.regex(out, reason)
    t.regex(out, new RegExp(`killed it \\(pid ${peer.child.pid}\\) with SIGKILL`))
  })
}

test.serial('examples/firecracker-handler gives up with a clear message when no peer connects within --connect-timeout-ms', async (t) => {
  const started = Date.now()
  const handler = await startHandler(join(dir, 'idle.sock'), ['--mem', join(dir, 'missing.mem'), '--connect-timeout-ms', '300'])
  const { code, out } = await handler.exit
  t.is(code, 1, out)
  t.regex(out, /no peer connected within 300 ms \(--connect-timeout-ms\): giving up/)
  t.true(Date.now() - started >= 300)
})
