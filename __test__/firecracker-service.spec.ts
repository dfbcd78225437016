// The restore server as a long-lived service: no connection holds up a VM, none it took is left
// waiting, bad input is refused at once. The stand-in VMs keep their userfaultfd after sending it,
// as Firecracker does: one the server abandons would wait for good.
import {
  chmodSync,
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import test from 'ava'
import { adoptFd, fingerprintOf, listen, Source, serveFirecracker } from 'userfaultfd'
import { spawnCollecting, until, within } from './helpers/harness'
import { closed, connection, errorsOf, nextSummary, PAGE, vmKit } from './helpers/vm'

const PAGES = 64
const kit = vmKit('uffd-fc-service-')
test.after.always(() => kit.remove())

test('a VM behind a silent connection is served at once; the silent one is dropped after handshakeTimeoutMs, not killed; the server keeps listening', async (t) => {
  const mem = kit.memoryFile('silent.mem', PAGES)
  const socket = kit.socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem, handshakeTimeoutMs: 3000 })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const silent = connection(socket, 'silent', 8000)
  await until(() => silent.output().includes('connected'), 'the silent connection')
  const first = nextSummary(server, 30_000)
  const { code, out } = await kit.startPeer(socket, mem, PAGES).exit
  t.is(code, 0, out)
  t.is((await first).outcome, 'served')
  t.deepEqual(errors, [], 'the VM was served before the silent connection was dropped')
  await until(() => errors.length > 0, 'the silent connection dropped')
  t.is(errors[0]?.code, 'ETIMEDOUT')
  t.regex(errors[0]?.message ?? '', /sent no handshake within 3000 ms/)
  t.is(errors[0]?.peer, undefined, 'nothing to kill: it sent nothing')
  // The server listens on: a VM that comes after is served.
  const second = nextSummary(server, 30_000)
  t.is((await kit.startPeer(socket, mem, PAGES).exit).code, 0)
  t.is((await second).outcome, 'served')
  const held = await silent.exit
  t.deepEqual([held.code, held.signal], [0, null], 'the silent connection was not killed')
  t.is(errors.length, 1, errors.map((e) => e.message).join('\n'))
})

test('a liveness probe (connect, close) is dropped with one error and not killed; a half-sent handshake is killed at its limit; VMs between are served', async (t) => {
  const mem = kit.memoryFile('probe.mem', PAGES)
  const socket = kit.socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem, handshakeTimeoutMs: 2000 })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const half = kit.startPeer(socket, mem, PAGES, ['--half-body'])
  const probe = connection(socket, 'probe', 3000)
  await until(() => probe.output().includes('connected'), 'the probe')
  const served = nextSummary(server, 30_000)
  const { code, out } = await kit.startPeer(socket, mem, PAGES).exit
  t.is(code, 0, out)
  t.is((await served).outcome, 'served')
  const probed = await probe.exit
  t.deepEqual([probed.code, probed.signal], [0, null], 'the probe was not killed')
  t.is((await half.exit).signal, 'SIGKILL', 'a VM that sent half a handshake cannot be served: it is killed')
  const probeError = errors.find((e) => /closed before sending/.test(e.message))
  t.truthy(probeError, errors.map((e) => e.message).join('\n'))
  t.is(probeError?.peer, undefined)
  const halfError = errors.find((e) => e.code === 'ETIMEDOUT')
  t.is(halfError?.peer?.pid, half.child.pid)
  t.regex(halfError?.message ?? '', /bytes of a handshake but not the rest within 2000 ms/)
  t.is(errors.length, 2, errors.map((e) => e.message).join('\n'))
})

test('close() while a VM’s handshake is on its way: the VM is served, then close; a connection after close() is refused', async (t) => {
  const mem = kit.memoryFile('closing.mem', PAGES)
  const socket = kit.socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem, handshakeTimeoutMs: 10_000 })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const order: string[] = []
  server.on('summary', (vm) => order.push(`summary ${vm.outcome}`))
  const done = closed(server, 30_000).then(() => order.push('close'))
  const vm = kit.startPeer(socket, mem, PAGES, ['--send-delay-ms', '1000'])
  await until(() => vm.output().includes('connected'), 'the VM to connect')
  await new Promise((resolve) => setTimeout(resolve, 200)) // taken by the server
  server.close()
  const late = connection(socket, 'silent', 500)
  t.regex((await late.exit).out, /ENOENT|ECONNREFUSED/, 'nothing listens after close()')
  const { code, out } = await vm.exit
  t.is(code, 0, out)
  await within(done, 'the close')
  t.deepEqual(order, ['summary served', 'close'])
  t.deepEqual(errors, [])
})

// Without prefetch, so that the cut comes before the pages are mapped (a prefetch maps these 4 MiB
// at once); a prefetch reads through the same native path (source.rs's unit test covers it).
test('a memory file cut while a VM is served: the VM gets no zero page it did not have; it is stopped and the summary says why', async (t) => {
  const pages = 1024
  const mem = kit.memoryFile('cut.mem', pages)
  const expected = kit.memoryFile('cut.expected', pages) // the same bytes, never cut
  const socket = kit.socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem, prefetch: false, readahead: { pages: 1 } })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const summary = nextSummary(server, 30_000)
  const vm = kit.startPeer(socket, expected, pages, ['--send-delay-ms', '1', '--delay-ms', '1000'])
  await until(() => vm.output().includes('connected'), 'the VM to connect')
  await new Promise((resolve) => setTimeout(resolve, 200)) // the handshake is in; its memory not touched yet
  truncateSync(mem, (pages / 2) * PAGE)
  const { code, signal, out } = await vm.exit
  t.not(code, 1, `the VM read wrong bytes: ${out}`)
  t.true(signal === 'SIGBUS' || signal === 'SIGKILL', `the VM is stopped: ${code} ${signal} ${out}`)
  const vmSummary = await summary
  // Killed, or dead of its SIGBUS before the kill came.
  t.true(vmSummary.outcome === 'killed' || vmSummary.outcome === 'exited', vmSummary.outcome)
  t.regex(vmSummary.error ?? '', new RegExp(`${mem}.*was cut while served`))
  t.regex(vmSummary.error ?? '', /region \d+ is the VM's region 0: offset \d+ of it/, 'the region named as the VM knows it')
  t.true(errors.some((e) => e.code === 'ERR_UFFD_PEER_KILLED'))
})

test('a memory file that cannot serve is refused at the start, named: a folder, an empty file, an unreadable one, a missing one', (t) => {
  const empty = join(kit.dir, 'empty.mem')
  writeFileSync(empty, '')
  const unreadable = kit.memoryFile('unreadable.mem', 1)
  chmodSync(unreadable, 0o200)
  const cases: Array<[string, string, RegExp]> = [
    [kit.dir, 'EISDIR', /is a directory/],
    [empty, 'EINVAL', /is empty/],
    [join(kit.dir, 'missing.mem'), 'ENOENT', /cannot be opened/],
  ]
  // root reads a file whatever its mode: only an unprivileged run sees EACCES.
  if (process.getuid?.() !== 0) cases.push([unreadable, 'EACCES', /cannot be opened/])
  for (const [file, code, message] of cases) {
    const socket = kit.socketPath()
    const error = t.throws(() => serveFirecracker({ socket, memoryFile: [kit.memoryFile('fine.mem', 1), file] }), { code, message })
    t.true(error?.message.includes(file), error?.message)
    t.false(existsSync(socket), 'nothing listens')
  }
})

test('a trace that is not valid is refused at the start, named: a fractional or negative page, a page past the memory, pageSize 0', (t) => {
  const mem = kit.memoryFile('traced.mem', 16)
  const memory = [fingerprintOf(mem)]
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['fraction', { pageSize: PAGE, pages: [1, 2.5] }, /2\.5 at pages\[1\]/],
    ['negative', { pageSize: PAGE, pages: [-1] }, /-1 at pages\[0\]/],
    ['past', { pageSize: PAGE, pages: [3, 16] }, /16 at pages\[1\].*0 to 15/],
    ['string', { pageSize: PAGE, pages: ['4'] }, /"4" at pages\[0\]/],
    ['zero', { pageSize: 0, pages: [1] }, /pageSize 0/],
    ['odd', { pageSize: 3000, pages: [1] }, /pageSize 3000/],
  ]
  for (const [name, fields, message] of cases) {
    const trace = join(kit.dir, `${name}.trace`)
    writeFileSync(trace, JSON.stringify({ format: 'userfaultfd-working-set', version: 1, memory, ...fields }))
    const socket = kit.socketPath()
    const error = t.throws(() => serveFirecracker({ socket, memoryFile: mem, replay: trace }), { code: 'EINVAL', message })
    t.true(error?.message.includes(trace), error?.message)
    t.false(existsSync(socket), 'nothing listens')
  }
})

test('--record into a missing folder, or where a folder is, is refused at the start, named', (t) => {
  const mem = kit.memoryFile('recorded.mem', 16)
  const cases: Array<[string, string, RegExp]> = [
    [join(kit.dir, 'no-such-folder', 'vm.trace'), 'ENOENT', /does not exist/],
    [join(mem, 'vm.trace'), 'ENOTDIR', /is not a folder/],
    [kit.dir, 'EISDIR', /it is a folder/],
  ]
  for (const [record, code, message] of cases) {
    const socket = kit.socketPath()
    const error = t.throws(() => serveFirecracker({ socket, memoryFile: mem, record }), { code, message })
    t.true(error?.message.includes(record), error?.message)
    t.false(existsSync(socket), 'nothing listens')
  }
})

test('an fd that is not a userfaultfd (a pipe) is refused at the handshake and its VM killed, not served', async (t) => {
  const mem = kit.memoryFile('pipe.mem', PAGES)
  const socket = kit.socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem, prefetch: false })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const summaries: string[] = []
  server.on('summary', (vm) => summaries.push(vm.outcome))
  const vm = kit.startPeer(socket, mem, PAGES, ['--send-pipe'])
  const { signal, out } = await within(vm.exit, 'the VM to be killed', 20_000)
  t.is(signal, 'SIGKILL', out)
  t.is(errors[0]?.code, 'EINVAL')
  t.regex(errors[0]?.message ?? '', /not a userfaultfd: it is pipe:/)
  t.is(errors[0]?.peer?.pid, vm.child.pid)
  t.deepEqual(summaries, [], 'never served')
})

test('adoptFd refuses an fd that is not a userfaultfd, saying what it is', (t) => {
  const mem = kit.memoryFile('adopt.mem', 1)
  const fd = openSync(mem, 'r')
  t.teardown(() => closeSync(fd))
  t.throws(() => adoptFd(fd, { ranges: [{ address: 1 << 30, length: PAGE, pageSize: PAGE }] }), {
    code: 'EINVAL',
    message: new RegExp(`not a userfaultfd: it is ${mem}`),
  })
})

test('a second server on a socket a live server listens on is refused (EADDRINUSE), and the first keeps serving and keeps its socket', async (t) => {
  const mem = kit.memoryFile('twice.mem', PAGES)
  const socket = kit.socketPath()
  const first = serveFirecracker({ socket, memoryFile: mem })
  t.teardown(() => first.close())
  t.throws(() => serveFirecracker({ socket, memoryFile: mem }), { code: 'EADDRINUSE', message: /another server is listening/ })
  t.throws(() => listen(socket), { code: 'EADDRINUSE' })
  t.true(existsSync(socket), 'the first server’s socket is still there')
  const summary = nextSummary(first, 30_000)
  const { code, out } = await kit.startPeer(socket, mem, PAGES).exit
  t.is(code, 0, out)
  t.is((await summary).outcome, 'served')
})

test('a stale socket file (its server was killed) is replaced, and the new server serves', async (t) => {
  const mem = kit.memoryFile('stale.mem', PAGES)
  const socket = kit.socketPath()
  const dead = spawnCollecting(
    process.execPath,
    ['-e', "require('node:net').createServer().listen(process.argv[1], () => process.kill(process.pid, 'SIGKILL'))", socket],
    'a server that dies',
  )
  t.is((await dead.exit).signal, 'SIGKILL')
  t.true(existsSync(socket), 'it left its socket file')
  const server = serveFirecracker({ socket, memoryFile: mem })
  t.teardown(() => server.close())
  const { code, out } = await kit.startPeer(socket, mem, PAGES).exit
  t.is(code, 0, out)
})

test('what is at the socket path and is not a socket, or a missing folder, is refused with a message that says so, and left as it is', (t) => {
  const mem = kit.memoryFile('notsock.mem', 1)
  const file = join(kit.dir, 'a-file.sock')
  writeFileSync(file, 'keep me')
  const cases: Array<[string, string, RegExp]> = [
    [file, 'EEXIST', /is a file that is not a socket: it was left as it is/],
    [kit.dir, 'EEXIST', /is a folder/],
    [join(kit.dir, 'no-such-folder', 'uffd.sock'), 'ENOENT', /the folder .*no-such-folder does not exist/],
  ]
  for (const [socket, code, message] of cases) t.throws(() => serveFirecracker({ socket, memoryFile: mem }), { code, message })
  t.is(readFileSync(file, 'utf8'), 'keep me')
})

test('socketMode and socketOwner give the socket file its mode and owner (names or ids), in the library and the command', async (t) => {
  const mem = kit.memoryFile('owned.mem', PAGES)
  const socket = kit.socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem, socketMode: 0o660, socketOwner: { uid: 65534, gid: 65534 } })
  t.teardown(() => server.close())
  const stat = statSync(socket)
  t.is(stat.mode & 0o777, 0o660)
  if (process.getuid?.() === 0) t.deepEqual([stat.uid, stat.gid], [65534, 65534])
  const viaCli = kit.socketPath()
  const command = [join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js'), 'firecracker', '--socket', viaCli, '--mem', mem]
  const owner = process.getuid?.() === 0 ? ['--socket-owner', 'nobody:nogroup'] : []
  const cli = spawnCollecting(process.execPath, [...command, '--once', '--socket-mode', '604', ...owner], 'the command', 60_000)
  await until(() => cli.output().includes('listening'), 'listening')
  const cliStat = statSync(viaCli)
  t.is(cliStat.mode & 0o777, 0o604)
  if (owner.length > 0) t.deepEqual([cliStat.uid, cliStat.gid], [65534, 65534])
  t.is((await kit.startPeer(viaCli, mem, PAGES).exit).code, 0)
  t.is((await cli.exit).code, 0)
  t.throws(() => serveFirecracker({ socket: kit.socketPath(), memoryFile: mem, socketOwner: 'no-such-user-here' }), {
    code: 'EINVAL',
    message: /no user named no-such-user-here/,
  })
})

test('every JSON line of the command has its time and level; a probe it dropped is a warning and not a failure', async (t) => {
  const mem = kit.memoryFile('lines.mem', PAGES)
  const socket = kit.socketPath()
  const command = [join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js'), 'firecracker', '--socket', socket, '--mem', mem]
  const cli = spawnCollecting(process.execPath, [...command, '--once'], 'the command', 60_000)
  await until(() => cli.output().includes('listening'), 'listening')
  t.deepEqual((await connection(socket, 'probe', 10).exit).code, 0)
  await until(() => cli.output().includes('closed before sending'), 'the probe dropped')
  t.is((await kit.startPeer(socket, mem, PAGES).exit).code, 0)
  const { code, out } = await cli.exit
  t.is(code, 0, out)
  const lines = out
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { time: string; level: string; event: string })
  t.deepEqual(
    lines.map((line) => `${line.event} ${line.level}`),
    ['listening info', 'error warn', 'connect info', 'summary info'],
  )
  for (const line of lines) t.true(Math.abs(Date.parse(line.time) - Date.now()) < 600_000, line.time)
})

test('kills go by the pidfd taken as the VM connected: one whose connecting process has exited is reported exited, not killed', async (t) => {
  const mem = kit.memoryFile('exited.mem', 16) // shorter than the VM's memory: it cannot be served
  const socket = kit.socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const summary = nextSummary(server, 30_000)
  // A child connects and exits (reaped: its pid is free for anyone); the VM sends on its socket.
  const vm = kit.startPeer(socket, mem, PAGES, ['--connect-from-child', '--hang-after', '0'])
  t.teardown(() => vm.child.kill('SIGKILL'))
  const vmSummary = await summary
  t.is(vmSummary.outcome, 'exited')
  t.regex(vmSummary.error ?? '', /ends at/)
  t.regex(errors[0]?.message ?? '', /had exited already/)
  await until(() => vm.output().includes('"child"'), 'the VM to say which child connected')
  const child = Number(/"child":(\d+)/.exec(vm.output())?.[1])
  t.is(vmSummary.pid, child, 'the pid is the connecting process’s (SO_PEERCRED)')
  // The VM itself was not the peer: it was neither served nor signalled.
  t.is(vm.child.exitCode, null)
  t.is(vm.child.signalCode, null)
})

test('a VM the handler cannot serve is killed through its pidfd, and reported killed', async (t) => {
  const mem = kit.memoryFile('pidfd-kill.mem', 16)
  const socket = kit.socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const summary = nextSummary(server, 30_000)
  const { signal } = await kit.startPeer(socket, mem, PAGES).exit
  t.is(signal, 'SIGKILL')
  t.is((await summary).outcome, 'killed')
  t.regex(errors[0]?.message ?? '', /it was killed/)
})

/** Starts the command as systemd would for a socket unit: the listening socket as fd 3, LISTEN_FDS=1, LISTEN_PID its pid. */
function activated(socket: string, args: string[]) {
  const cli = join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js')
  const script = `import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(16)
if s.fileno() != 3: os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])`
  return spawnCollecting('python3', ['-c', script, socket, process.execPath, cli, 'firecracker', ...args], 'the activated command', 60_000)
}

test('systemd socket activation: the command serves on the socket it was given (LISTEN_FDS), and leaves it to its maker', async (t) => {
  const mem = kit.memoryFile('activated.mem', PAGES)
  const socket = kit.socketPath()
  const cli = activated(socket, ['--mem', mem, '--once'])
  await until(() => cli.output().includes('listening'), 'listening')
  t.is((await kit.startPeer(socket, mem, PAGES).exit).code, 0)
  const { code, out } = await cli.exit
  t.is(code, 0, out)
  const events = out
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { event: string; socket?: unknown; outcome?: string })
  t.deepEqual(
    events.map((line) => line.event),
    ['listening', 'connect', 'summary'],
  )
  t.is(events[0]?.socket, 3)
  t.is(events[2]?.outcome, 'served')
  t.true(existsSync(socket), 'the socket file is its maker’s: left in place')
})

test('listen(fd) refuses an fd that is not a listening Unix socket, saying so', (t) => {
  const mem = kit.memoryFile('not-a-socket.mem', 1)
  const fd = openSync(mem, 'r')
  t.teardown(() => closeSync(fd))
  t.throws(() => listen(fd), { code: 'ENOTSOCK' })
  t.throws(() => listen(fd, { mode: 0o600 }), { message: /unset for a socket given as an fd/ })
})

test('out of file descriptors: the server says so once per episode (not in a tight loop), drops the silent connections in time, and serves the VM after', async (t) => {
  const mem = kit.memoryFile('fds.mem', PAGES)
  const socket = kit.socketPath()
  const cli = join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js')
  const args = [
    '--nofile=128:128',
    process.execPath,
    cli,
    'firecracker',
    '--socket',
    socket,
    '--mem',
    mem,
    '--handshake-timeout-ms',
    '2000',
  ]
  const server = spawnCollecting('prlimit', args, 'the command', 60_000)
  t.teardown(() => server.child.kill('SIGKILL'))
  await until(() => server.output().includes('listening'), 'listening')
  // 200 connections that say nothing for 3 s: more than the server has fds for.
  const script = `const net = require('node:net')
let open = 0
for (let i = 0; i < 200; i++) net.connect(process.argv[1]).on('connect', () => { if (++open === 200) console.log('connected') }).on('error', () => {})
setTimeout(() => process.exit(0), 3000)`
  const silent = spawnCollecting(process.execPath, ['-e', script, socket], 'the silent connections', 60_000)
  t.is((await silent.exit).code, 0)
  const { code, out } = await kit.startPeer(socket, mem, PAGES).exit
  t.is(code, 0, out)
  await until(() => server.output().includes('"summary"'), 'the summary')
  const lines = server
    .output()
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { event: string; code?: string; outcome?: string; level: string })
  const exhausted = lines.filter((line) => line.code === 'EMFILE')
  t.true(exhausted.length >= 1, 'it said it ran out')
  t.true(exhausted.length <= 5, `${exhausted.length} lines of EMFILE`)
  t.is(lines.find((line) => line.event === 'summary')?.outcome, 'served')
})

test('process.exit() while an accept() waits ends the process at once (it waited for the pool thread of the handshake)', async (t) => {
  const socket = kit.socketPath()
  const script = `const { listen } = require('userfaultfd')
listen(process.argv[1]).accept().catch(() => {})
setTimeout(() => { console.log('exiting'); process.exit(0) }, 200)`
  const child = spawnCollecting(process.execPath, ['-e', script, socket], 'a process exiting while it accepts', 60_000)
  const { code, out } = await within(child.exit, 'the exit', 20_000)
  t.is(code, 0, out)
  t.regex(out, /exiting/)
})

test('a live server whose backlog is full is refused at once (EADDRINUSE), not waited for', async (t) => {
  const socket = kit.socketPath()
  const mem = kit.memoryFile('backlog.mem', 4)
  // A server that hangs: it listens and never accepts, and its backlog is full.
  const hung = spawnCollecting(
    'python3',
    [
      '-c',
      `import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(0)
held = []
while True:
    c = socket.socket(socket.AF_UNIX); c.setblocking(False)
    try: c.connect(sys.argv[1]); held.append(c)
    except BlockingIOError: break
print('full', flush=True); time.sleep(60)`,
      socket,
    ],
    'a hung server',
    90_000,
  )
  t.teardown(() => hung.child.kill('SIGKILL'))
  await until(() => hung.output().includes('full'), 'the backlog full')
  const script = `try { require('userfaultfd').serveFirecracker({ socket: process.argv[1], memoryFile: process.argv[2] }) }
catch (error) { console.log(error.code); process.exit(0) }`
  const { code, out } = await within(
    spawnCollecting(process.execPath, ['-e', script, socket, mem], 'a second server', 60_000).exit,
    'the refusal',
    20_000,
  )
  t.is(code, 0, out)
  t.is(out.trim(), 'EADDRINUSE')
})

test.serial('an adoption from accept() lets go of its pidfd as its userfaultfd closes, not at a garbage collection', async (t) => {
  const PAGES = 16
  const mem = kit.memoryFile('pidfd.mem', PAGES)
  const socket = kit.socketPath()
  const listener = listen(socket)
  t.teardown(() => listener.close())
  const pidfds = () => readdirSync('/proc/self/fd').filter((fd) => readlinkOrEmpty(`/proc/self/fd/${fd}`) === 'anon_inode:[pidfd]').length
  const before = pidfds()
  const vm = kit.startPeer(socket, mem, PAGES)
  const { uffd, regions } = await within(listener.accept(), 'the handshake')
  uffd.on('error', () => {}) // the VM's exit (ERR_UFFD_PEER_GONE)
  t.is(pidfds(), before + 1)
  for (const region of regions) uffd.serve(region, { source: Source.file(mem) })
  t.is((await vm.exit).code, 0)
  await until(() => uffd.closed, 'the userfaultfd closed as its VM exited')
  await new Promise((resolve) => setImmediate(resolve))
  t.is(pidfds(), before)
})

function readlinkOrEmpty(path: string): string {
  try {
    return readlinkSync(path)
  } catch {
    return ''
  }
}
