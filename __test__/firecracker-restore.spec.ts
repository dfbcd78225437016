// Snapshot restore: serveFirecracker against a C peer that does what Firecracker does (several
// regions, the 1.12+ handshake body, EVENT_REMOVE for its balloon, hugetlb memory) and checks
// every byte of every page it reads against the memory it should see.
import { spawnSync } from 'node:child_process'
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import test from 'ava'
import { readTrace, serveFirecracker, type VmSummary } from 'userfaultfd'
import { spawnCollecting, until, withHugePages } from './helpers/harness'
import { errorsOf, nextSummary, PAGE, pageOf, vmKit } from './helpers/vm'

const PAGES = 256
const { dir, remove, socketPath, memoryFile, startPeer } = vmKit('uffd-fc-')
test.after.always(remove)

test('serveFirecracker serves every page of a two-region VM from its memory file; the VM checks every byte', async (t) => {
  const mem = memoryFile('two-regions.mem', 2 * PAGES)
  const socket = socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem, handshakeTimeoutMs: 30_000 })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const summary = nextSummary(server)
  const peer = startPeer(socket, mem, PAGES, ['--regions', '2'])
  const { code, out } = await peer.exit
  t.is(code, 0, out)
  t.regex(out, new RegExp(`"pages":${2 * PAGES},"wrong":0`))
  const vm = await summary
  t.is(vm.outcome, 'served')
  t.is(vm.pid, peer.child.pid)
  t.is(vm.regions, 2)
  t.true(vm.bytesMapped >= 2 * PAGES * PAGE - PAGE, `${vm.bytesMapped}`)
  server.close()
  t.deepEqual(errors, [])
})

test('holes of a sparse memory file are mapped as zeros without a read (stats.holes), and read as zeros', async (t) => {
  const mem = memoryFile('sparse.mem', PAGES, PAGE, 0, (p) => p % 32 < 4)
  const socket = socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem, prefetch: false, readahead: { pages: 1 } })
  t.teardown(() => server.close())
  const summary = nextSummary(server)
  const { code, out } = await startPeer(socket, mem, PAGES).exit
  t.is(code, 0, out)
  const vm = await summary
  t.true(vm.holes >= (PAGES * 28) / 32, `holes: ${vm.holes}`)
  server.close()
})

test('layered memory files: each page comes from the topmost layer with data there; holes of every layer are zeros', async (t) => {
  const base = memoryFile('base.mem', PAGES, PAGE, 0, (p) => p < PAGES - 16)
  const diffPages = new Set([3, 10, 11, 200, PAGES - 4])
  const diff = memoryFile('diff.mem', PAGES, PAGE, 5, (p) => diffPages.has(p))
  // What the VM must read: the diff's pages over the base's, zeros where neither has data.
  const merged = memoryFile('merged.mem', PAGES, PAGE, 0, (p) => p < PAGES - 16 && !diffPages.has(p))
  const fd = openSync(merged, 'r+')
  for (const p of diffPages) writeSync(fd, pageOf(p, PAGE, 5), 0, PAGE, p * PAGE)
  closeSync(fd)
  const socket = socketPath()
  const server = serveFirecracker({ socket, memoryFile: [base, diff] })
  t.teardown(() => server.close())
  const summary = nextSummary(server)
  const { code, out } = await startPeer(socket, merged, PAGES).exit
  t.is(code, 0, out)
  t.is((await summary).outcome, 'served')
  server.close()
})

/** The VM's arguments to touch a scattered working set first (a page in 8, backwards), listed in `name`, a second after its handshake. */
function scatteredOrder(name: string): string[] {
  const order = join(dir, name)
  writeFileSync(order, Array.from({ length: PAGES / 8 }, (_, i) => PAGES - 1 - 8 * i).join('\n'))
  return ['--order', order, '--delay-ms', '1000']
}

test('record then replay: the trace maps the working set in order before the VM touches it, so the VM takes almost no faults', async (t) => {
  const mem = memoryFile('replay.mem', PAGES)
  const trace = join(dir, 'replay.trace')
  // The VM touches a scattered working set first: a page in 8, backwards.
  const args = scatteredOrder('order.txt')
  const recording = serveFirecracker({ socket: socketPath(), memoryFile: mem, prefetch: false, readahead: { pages: 1 }, record: trace })
  t.teardown(() => recording.close())
  const recorded = nextSummary(recording)
  t.is((await startPeer(recording.socket as string, mem, PAGES, args).exit).code, 0)
  const first = await recorded
  recording.close()
  const written = readTrace(trace, [mem])
  t.is(written.pages.length, PAGES, 'every page the VM touched, once')
  t.deepEqual(written.pages.slice(0, 4), [PAGES - 1, PAGES - 9, PAGES - 17, PAGES - 25], 'in the order it touched them')
  const replaying = serveFirecracker({ socket: socketPath(), memoryFile: mem, prefetch: false, readahead: { pages: 1 }, replay: trace })
  t.teardown(() => replaying.close())
  const replayed = nextSummary(replaying)
  const { code, out } = await startPeer(replaying.socket as string, mem, PAGES, args).exit
  t.is(code, 0, out)
  const second = await replayed
  t.is(second.replayedPages, PAGES)
  t.true(second.faults <= Math.max(2, first.faults / 20), `faults: ${first.faults} recording, ${second.faults} replaying`)
  replaying.close()
})

test('workingSet: the first restore records the trace, the first VM served writes it, the restores after replay it; a stale one is said and replaced', async (t) => {
  const mem = memoryFile('auto.mem', PAGES)
  const trace = join(dir, 'auto.trace')
  const args = scatteredOrder('auto-order.txt')
  const server = serveFirecracker({ socket: socketPath(), memoryFile: mem, readahead: { pages: 1 }, workingSet: trace })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const written = new Promise<{ path: string; pages: number }>((resolve) => server.once('trace', resolve))
  // The first restore: no trace yet, it records (on demand: no prefetch would hide pages from it).
  const first = nextSummary(server)
  t.is((await startPeer(server.socket as string, mem, PAGES, args).exit).code, 0)
  t.is((await first).prefetchedPages, 0)
  t.deepEqual(await written, { path: trace, pages: PAGES })
  t.deepEqual(readTrace(trace, [mem]).pages.slice(0, 3), [PAGES - 1, PAGES - 9, PAGES - 17])
  // The next replays it, on the same server.
  const second = nextSummary(server)
  t.is((await startPeer(server.socket as string, mem, PAGES, args).exit).code, 0)
  t.is((await second).replayedPages, PAGES)
  server.close()
  t.deepEqual(errors, [])

  // The snapshot changed: the trace is stale; it is said, and the next restore records a new one.
  const changed = memoryFile('auto.mem', PAGES, PAGE, 5)
  const again = serveFirecracker({ socket: socketPath(), memoryFile: changed, readahead: { pages: 1 }, workingSet: trace })
  t.teardown(() => again.close())
  const stale = errorsOf(again)
  const rewritten = new Promise((resolve) => again.once('trace', resolve))
  t.is((await startPeer(again.socket as string, changed, PAGES, args).exit).code, 0)
  await rewritten
  t.is(stale.length, 1)
  t.regex(stale[0]?.message ?? '', /another memory file.*a new one is recorded/)
  t.is(stale[0]?.code, 'ERR_UFFD_TRACE_STALE')
  t.notThrows(() => readTrace(trace, [changed]))
  again.close()
  t.throws(() => serveFirecracker({ socket: socketPath(), memoryFile: mem, workingSet: trace, replay: trace }), {
    code: 'ERR_INVALID_ARG_TYPE',
  })
})

test('a trace recorded for another memory file is refused', (t) => {
  const mem = memoryFile('one.mem', 16)
  const other = memoryFile('other.mem', 16, PAGE, 9)
  const trace = join(dir, 'one.trace')
  writeFileSync(
    trace,
    JSON.stringify({
      format: 'userfaultfd-working-set',
      version: 1,
      memory: [{ size: 16 * PAGE, fingerprint: 'x' }],
      pageSize: PAGE,
      pages: [1],
    }),
  )
  t.throws(() => serveFirecracker({ socket: socketPath(), memoryFile: other, replay: trace }), {
    code: 'EINVAL',
    message: /another memory file/,
  })
  t.throws(() => readTrace(trace, [mem]), { code: 'EINVAL' })
})

test('four VMs restored at once by one server: each reads its bytes right, four summaries', async (t) => {
  const mem = memoryFile('four.mem', PAGES)
  const socket = socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem })
  t.teardown(() => server.close())
  const summaries: VmSummary[] = []
  server.on('summary', (vm) => summaries.push(vm))
  const peers = Array.from({ length: 4 }, () => startPeer(socket, mem, PAGES))
  for (const peer of peers) {
    const { code, out } = await peer.exit
    t.is(code, 0, out)
  }
  await until(() => summaries.length >= 4, 'four summaries')
  const sorted = (pids: Array<number | undefined>) => [...pids].sort((a, b) => (a ?? 0) - (b ?? 0))
  t.deepEqual(sorted(summaries.map((vm) => vm.pid)), sorted(peers.map((peer) => peer.child.pid)))
  t.true(summaries.every((vm) => vm.outcome === 'served'))
  server.close()
})

test('a VM the handler cannot serve (its memory file is shorter than its memory) is killed, not left frozen', async (t) => {
  const mem = memoryFile('short.mem', 16)
  const socket = socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const summary = nextSummary(server)
  const { signal } = await startPeer(socket, mem, PAGES).exit
  t.is(signal, 'SIGKILL')
  const vm = await summary
  t.is(vm.outcome, 'killed')
  t.regex(vm.error ?? '', /ends at/)
  t.is(errors[0]?.code, 'ERR_UFFD_PEER_KILLED')
  server.close()
})

test('a VM whose handshake is refused is killed (its pid comes with the refusal), and the server serves the next', async (t) => {
  const mem = memoryFile('refused.mem', PAGES)
  const socket = socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const refused = startPeer(socket, mem, PAGES, ['--bad-body'])
  t.is((await refused.exit).signal, 'SIGKILL')
  t.is(errors[0]?.code, 'EINVAL')
  t.is(errors[0]?.peer?.pid, refused.child.pid)
  const { code, out } = await startPeer(socket, mem, PAGES).exit
  t.is(code, 0, out)
})

test('balloon: pages the VM gives back (MADV_DONTNEED, EVENT_REMOVE) read as zeros after, not as the snapshot’s bytes', async (t) => {
  const mem = memoryFile('balloon.mem', PAGES)
  const socket = socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem })
  t.teardown(() => server.close())
  const summary = nextSummary(server)
  const { code, out } = await startPeer(socket, mem, PAGES, ['--balloon', '8:16']).exit
  t.is(code, 0, out)
  t.regex(out, /"balloon_wrong":0/)
  t.is((await summary).outcome, 'served')
  server.close()
})

test('a VM killed mid-restore ends its restore; the server serves the next VM', async (t) => {
  const mem = memoryFile('killed.mem', PAGES)
  const socket = socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem, prefetch: false })
  t.teardown(() => server.close())
  const first = nextSummary(server)
  const hanging = startPeer(socket, mem, PAGES, ['--hang-after', '10'])
  await until(() => hanging.output().includes('hanging'), 'the peer to hang')
  hanging.child.kill('SIGKILL')
  t.is((await hanging.exit).signal, 'SIGKILL')
  t.is((await first).outcome, 'served')
  const second = nextSummary(server)
  const { code, out } = await startPeer(socket, mem, PAGES).exit
  t.is(code, 0, out)
  t.is((await second).outcome, 'served')
  server.close()
})

const [hugeTest, hugeTitle] = withHugePages(8, test, 'a guest in 2 MiB hugetlbfs pages is served in 2 MiB pages, bytes right')
hugeTest(hugeTitle, async (t) => {
  const hugePages = 8
  const HUGE = 2 * 1024 * 1024
  const mem = memoryFile('huge.mem', hugePages, HUGE)
  const socket = socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem })
  t.teardown(() => server.close())
  const summary = nextSummary(server)
  const { code, out } = await startPeer(socket, mem, hugePages, ['--huge']).exit
  t.is(code, 0, out)
  const vm = await summary
  t.is(vm.pagesMapped, hugePages)
  server.close()
})

test('the userfaultfd command serves a VM and prints a JSON line per event', async (t) => {
  const mem = memoryFile('cli.mem', PAGES)
  const socket = socketPath()
  const command = [join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js'), 'firecracker', '--socket', socket, '--mem', mem, '--once']
  const cli = spawnCollecting(process.execPath, command, 'the command', 60_000)
  await until(() => cli.output().includes('listening'), 'listening')
  const { code } = await startPeer(socket, mem, PAGES).exit
  t.is(code, 0)
  const { code: cliCode, out } = await cli.exit
  t.is(cliCode, 0, out)
  const lines = out
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { event: string; outcome?: string })
  t.deepEqual(
    lines.map((line) => line.event),
    ['listening', 'connect', 'summary'],
  )
  t.is(lines[2]?.outcome, 'served')
})

test('the command with --record or --working-set records on demand (no prefetch unless asked) and says when a trace is written', async (t) => {
  const mem = memoryFile('cli-ws.mem', PAGES)
  const socket = socketPath()
  const trace = join(dir, 'cli-ws.trace')
  const cli = join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js')
  const command = [cli, 'firecracker', '--socket', socket, '--mem', mem, '--once', '--working-set', trace]
  const server = spawnCollecting(process.execPath, command, 'the command', 60_000)
  await until(() => server.output().includes('listening'), 'listening')
  t.is((await startPeer(socket, mem, PAGES, ['--delay-ms', '500']).exit).code, 0)
  const { code, out } = await server.exit
  t.is(code, 0, out)
  const lines = out
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { event: string; prefetchedPages?: number; pages?: number })
  t.deepEqual(
    lines.map((line) => line.event),
    ['listening', 'connect', 'trace', 'summary'],
  )
  t.is(lines[2]?.pages, PAGES)
  t.is(lines[3]?.prefetchedPages, 0)
  const record = join(dir, 'cli-record.trace')
  const recording = spawnCollecting(
    process.execPath,
    [cli, 'firecracker', '--socket', socket, '--mem', mem, '--once', '--record', record],
    'the command',
    60_000,
  )
  await until(() => recording.output().includes('listening'), 'listening')
  t.is((await startPeer(socket, mem, PAGES, ['--delay-ms', '500']).exit).code, 0)
  const recorded = await recording.exit
  t.regex(recorded.out, /"prefetchedPages":0/)
  t.is(readTrace(record, [mem]).pages.length, PAGES)
})

test('the command with --working-set-beside keeps the trace as FILE.working-set.json next to the memory file', async (t) => {
  const mem = memoryFile('cli-beside.mem', PAGES)
  const cli = join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js')
  for (let run = 0; run < 2; run++) {
    const socket = socketPath()
    const command = [cli, 'firecracker', '--socket', socket, '--mem', mem, '--working-set-beside', '--once']
    const server = spawnCollecting(process.execPath, command, 'the command', 60_000)
    await until(() => server.output().includes('listening'), 'listening')
    t.is((await startPeer(socket, mem, PAGES, ['--delay-ms', '300']).exit).code, 0)
    const { code, out } = await server.exit
    t.is(code, 0, out)
    if (run === 0) t.true(out.includes(`"event":"trace","path":${JSON.stringify(`${mem}.working-set.json`)}`), out)
    else t.regex(out, /"replayedPages":[1-9]/)
  }
  t.is(readTrace(`${mem}.working-set.json`, [mem]).pages.length, PAGES)
  const both = spawnSync(
    process.execPath,
    [cli, 'firecracker', '--socket', socketPath(), '--mem', mem, '--working-set-beside', '--working-set', join(dir, 'x')],
    {
      encoding: 'utf8',
      timeout: 60_000,
    },
  )
  t.is(both.status, 2)
  t.regex(both.stderr, /two places for one trace/)
})
