#!/usr/bin/env node
// `node --expose-gc scripts/many-regions.mjs [--runs N] [--regions N] [--delay-ms N] [--no-prefetch] [--gc-at-end-only] [--cli]`
//
// --cli: the server is the command (`node dist/lib/cli.js firecracker`), a process of its own,
// measured through /proc/PID (it collects garbage itself after a VM of many regions).
//
// Many-region restores through one Firecracker server (run `npm run build` first): N sequential
// stand-in VMs (__test__/helpers/vm-peer.c, which keeps its userfaultfd as Firecracker does) of
// `--regions` one-page regions each, every byte checked, with no delay between the handshake and
// the first touch by default (a fault may come before its region is served). After each restore
// the server's RSS, heap and the native objects still alive are read from /proc/self and the
// package; one JSON line per run, then a summary line. Exit code 1 if a VM was not served.
// A measurement, not a test: the figures go in the report (issue 18, "many-region memory returned").
import { execFileSync, spawn } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { serveFirecracker } from '../dist/index.mjs'

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '20' },
    regions: { type: 'string', default: '9000' },
    'delay-ms': { type: 'string', default: '0' },
    'no-prefetch': { type: 'boolean', default: false },
    // Collect garbage only at the start and the end (as a server that is never told to): needs --expose-gc.
    'gc-at-end-only': { type: 'boolean', default: false },
    cli: { type: 'boolean', default: false },
  },
})
const runs = Number(values.runs)
const regions = Number(values.regions)
const PAGE = 4096

const dir = mkdtempSync(join(tmpdir(), 'uffd-many-regions-'))
const peer = join(dir, 'vm-peer')
execFileSync('cc', ['-O2', '-o', peer, new URL('../__test__/helpers/vm-peer.c', import.meta.url).pathname])
const mem = join(dir, 'vm.mem')
const fd = openSync(mem, 'w')
const page = Buffer.alloc(PAGE)
for (let p = 0; p < regions; p++) {
  page.fill(p & 0xff)
  page.writeUInt32LE(p, 0)
  writeSync(fd, page, 0, PAGE, p * PAGE)
}
closeSync(fd)

/** The server's process: this one, or the command's (--cli). */
let pid = 'self'

function memory() {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? Number.NaN)
  return {
    rssMiB: +(field('VmRSS') / 1024).toFixed(1),
    ...(pid === 'self' ? { heapMiB: +(process.memoryUsage().heapUsed / 2 ** 20).toFixed(1) } : {}),
    threads: field('Threads'),
    fds: readdirSync(`/proc/${pid}/fd`).length,
    maps: readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').length - 1,
  }
}

/** Resident KiB by kind of mapping (files, [heap] for the main malloc arena, [anon] for V8's heap, other arenas and stacks). */
function residentByKind() {
  const byKind = {}
  let kind
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line)
    if (head) kind = head[1]?.startsWith('/') ? 'files' : head[1] || '[anon]'
    else if (kind && line.startsWith('Rss:')) byKind[kind] = (byKind[kind] ?? 0) + Number(line.split(/\s+/)[1])
  }
  return { files: byKind.files, heap: byKind['[heap]'], anon: byKind['[anon]'] }
}

const settle = async (collect = !values['gc-at-end-only']) => {
  for (let i = 0; i < 3; i++) {
    if (collect) globalThis.gc?.()
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

const server = values.cli
  ? await command()
  : serveFirecracker({ socket: join(dir, 'fc.sock'), memoryFile: mem, prefetch: !values['no-prefetch'] })
const errors = []
server.on('error', (error) => errors.push(error.message))

/** The command as a server: its summaries and errors as events, its close. */
async function command() {
  const socket = join(dir, 'fc.sock')
  const cli = new URL('../dist/lib/cli.js', import.meta.url).pathname
  const args = [cli, 'firecracker', '--socket', socket, '--mem', mem, ...(values['no-prefetch'] ? ['--no-prefetch'] : [])]
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  pid = child.pid
  const events = new (await import('node:events')).EventEmitter()
  let rest = ''
  child.stdout.on('data', (chunk) => {
    rest += chunk
    for (let at = rest.indexOf('\n'); at >= 0; at = rest.indexOf('\n')) {
      const line = JSON.parse(rest.slice(0, at))
      rest = rest.slice(at + 1)
      if (line.event === 'listening') events.emit('listening')
      if (line.event === 'summary') events.emit('summary', line)
      if (line.event === 'error') events.emit('error', line)
    }
  })
  await new Promise((resolve) => events.once('listening', resolve))
  return Object.assign(events, {
    socket,
    close: () => child.kill('SIGINT'),
    once: events.once.bind(events),
  })
}
await settle(true)
const start = { ...memory(), residentKiB: residentByKind() }
console.log(JSON.stringify({ run: 0, ...start }))
let bad = 0
for (let run = 1; run <= runs; run++) {
  const summary = new Promise((resolve) => server.once('summary', resolve))
  const vm = spawn(peer, [server.socket, mem, '1', '--regions', String(regions), '--delay-ms', values['delay-ms']], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  vm.stdout.on('data', (chunk) => (out += chunk))
  vm.stderr.on('data', (chunk) => (out += chunk))
  const [code, signal] = await new Promise((resolve) => vm.on('exit', (c, s) => resolve([c, s])))
  const vmSummary = await summary
  if (code !== 0 || vmSummary.outcome !== 'served') bad++
  await settle()
  console.log(JSON.stringify({ run, code, signal, outcome: vmSummary.outcome, error: vmSummary.error, ...memory() }))
}
await settle(true)
const end = { ...memory(), residentKiB: residentByKind() }
server.close()
if (!values.cli) await new Promise((resolve) => server.once('close', resolve))
console.log(
  JSON.stringify({
    summary: true,
    runs,
    regions,
    notServed: bad,
    errors: errors.length,
    start,
    end,
    rssGrowthMiB: +(end.rssMiB - start.rssMiB).toFixed(1),
  }),
)
rmSync(dir, { recursive: true, force: true })
process.exit(bad === 0 ? 0 : 1)
