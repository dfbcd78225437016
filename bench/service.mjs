#!/usr/bin/env node
// The restore server as a long-lived service (issue 18, its measured part): `userfaultfd firecracker`
// run as `node dist/lib/cli.js firecracker --socket S --mem FILE ...` against stand-in VMs
// (bench/service-peer.c, built with cc: a process that creates a userfaultfd, registers its memory,
// sends Firecracker's handshake, keeps its fd, as Firecracker does, and touches pages, checking
// every byte against the memory file). Three parts, in one run:
//
//   1. silent: handshake to first fault served, measured in the VM (from its connect to the end of
//      its first page read), with 200 silent connections held open against the server vs with none;
//      two servers with the same options, runs alternating between them. Goal <= 1.2x.
//   2. churn: 1,000 restores in a row through one server (sequential VMs, each reading every page
//      and checking every byte); the server's threads, fds (/proc/PID/fd), mappings (lines of
//      /proc/PID/maps) and RSS sampled every 50 restores: first, last, max, flat or not.
//   3. restart: restart under a running VM (kill -9 the server, start it again with the same
//      --socket, 100 times), the stall the VM sees (its longest single page touch while the server
//      restarts) p50/max against the restart time (goal: max <= restart + 50 ms), every byte
//      checked after each restart. It needs the server's keeper (`--keeper` in
//      `firecracker --help`); without it this part prints a `skipped:` line.
//
//   node bench/service.mjs [--quick] [--out DIR] [--json FILE] [--only silent|churn|restart]...
//                          [--runs N] [--restores N] [--restarts N] [--keeper-args "ARGS"]
//
// --keeper-args: the server's keeper options for part 3 (default `--keeper TMP/keeper.sock`, a
// keeper socket in the run's own temporary folder).
// --quick: about a minute (10 runs, 100 restores, 10 restarts). Tables on stdout, progress on stderr,
// JSON in DIR/userfaultfd-bench-service.json (DIR: --out, else the current folder; FILE with --json).
// What cannot run (no cc, no build, no keeper) is said in one `skipped: WHAT: WHY` line on stderr,
// and the run goes on without it. It needs `npm run build` first (dist/lib/cli.js).
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { lineReader, proc, runPeer as runPeerAt, startServer as startServerOf, stats } from './service-kit.mjs'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const CLI = join(ROOT, 'dist', 'lib', 'cli.js')
const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    json: { type: 'string' },
    only: { type: 'string', multiple: true },
    runs: { type: 'string' },
    restores: { type: 'string' },
    restarts: { type: 'string' },
    connections: { type: 'string', default: '200' },
    'keeper-args': { type: 'string' },
  },
})
const QUICK = values.quick
const RUNS = Number(values.runs ?? (QUICK ? 10 : 30))
const RESTORES = Number(values.restores ?? (QUICK ? 100 : 1000))
const RESTARTS = Number(values.restarts ?? (QUICK ? 10 : 100))
const CONNECTIONS = Number(values.connections)
const SAMPLE_EVERY = 50
const PAGE = 4096
const PAGES = 256 // 1 MiB a VM for parts 1 and 2
const LOOP_PAGES = 1024 // 4 MiB for the VM that runs through the restarts
const LOOP_PAUSE_US = 200 // between two touches of that VM
const parts = new Set(values.only ?? ['silent', 'churn', 'restart'])

const log = (text) => process.stderr.write(`${text}\n`)
const skip = (what, why) => log(`skipped: ${what}: ${why}`)

// ---------------------------------------------------------------------------------------------
// The kit: a folder, the stand-in VM, memory files, servers.

function have(command, args) {
  return spawnSync(command, args, { stdio: 'ignore' }).status === 0
}

const dir = mkdtempSync(join(tmpdir(), 'uffd-bench-service-'))
process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
const PEER = join(dir, 'service-peer')
const missing = !existsSync(CLI)
  ? `no ${CLI} (npm run build)`
  : !existsSync(join(ROOT, 'bench', 'service-peer.c')) || !existsSync(join(ROOT, '__test__', 'helpers', 'send-fd.h'))
    ? 'the stand-in VM (bench/service-peer.c, __test__/helpers/send-fd.h) is in a checkout only, not in the package'
    : !have('cc', ['--version'])
      ? 'no C compiler (cc) to build the stand-in VM'
      : undefined
if (missing) {
  skip('service', missing)
  process.exit(0)
}
execFileSync('cc', ['-O2', '-Wall', '-I', join(ROOT, '__test__', 'helpers'), '-o', PEER, join(ROOT, 'bench', 'service-peer.c')])

/** Page `p` of a memory image: bytes that differ from page to page (as __test__/helpers/vm.ts's pageOf). */
function pageOf(p) {
  const bytes = Buffer.alloc(PAGE)
  for (let i = 0; i < PAGE; i += 8) bytes.writeUInt32LE((p * 2654435761 + i * 40503 + 1) >>> 0, i)
  return bytes
}

function memoryFile(name, pages) {
  const path = join(dir, name)
  const fd = openSync(path, 'w')
  for (let p = 0; p < pages; p++) writeSync(fd, pageOf(p), 0, PAGE, p * PAGE)
  closeSync(fd)
  return path
}

let sockets = 0
const socketPath = () => join(dir, `fc-${sockets++}.sock`)
const startServer = (socket, mem, args = []) => startServerOf(CLI, socket, mem, args)
const runPeer = (socket, mem, pages, ms) => runPeerAt(PEER, socket, mem, pages, ms)

const ms = (us, digits = 1) => (Number.isFinite(us) ? `${(us / 1000).toFixed(digits)} ms` : '-')
const errorLines = (server) =>
  server.lines.filter((line) => line.level === 'error' || line.level === 'warn' || line.event === 'error' || line.text)

const json = { quick: QUICK, date: new Date().toISOString(), node: process.version }
const out = []

// ---------------------------------------------------------------------------------------------
// 1. Handshake to first fault served: 200 silent connections held open vs none.

async function silentConnections() {
  const mem = memoryFile('silent.mem', PAGES)
  // The same options for both: a handshake limit long enough that the silent connections stay open
  // through the whole part (the default, 5 s, would drop them and measure the server with none).
  const args = ['--handshake-timeout-ms', '600000']
  const quiet = await startServer(socketPath(), mem, args)
  const busy = await startServer(socketPath(), mem, args)
  const busySocket = busy.socket
  const quietSocket = quiet.socket
  const held = []
  let closedEarly = 0
  let ending = false
  await Promise.all(
    Array.from(
      { length: CONNECTIONS },
      () =>
        new Promise((resolveConnect, reject) => {
          const socket = connect(busySocket)
          socket.on('connect', resolveConnect)
          socket.on('error', reject)
          socket.on('close', () => {
            if (!ending) closedEarly++
          })
          held.push(socket)
        }),
    ),
  )
  await sleep(200)
  const results = { quiet: [], busy: [] }
  const failures = []
  let bytes = 0
  const WARMUP = 2
  for (let run = 0; run < RUNS + WARMUP; run++) {
    // Alternate which goes first: the machine is shared and noisy.
    const order = run % 2 ? ['busy', 'quiet'] : ['quiet', 'busy']
    for (const which of order) {
      const res = await runPeer(which === 'busy' ? busySocket : quietSocket, mem, PAGES)
      if (res.code !== 0 || res.result?.wrong !== 0) failures.push({ which, run, ...res })
      else if (run >= WARMUP) {
        results[which].push(res.result.firstFaultUs)
        bytes += res.result.bytes
      }
    }
    if (run >= WARMUP) process.stderr.write(`\rsilent: run ${run - WARMUP + 1}/${RUNS}`)
  }
  log('')
  const openAtEnd = held.filter((socket) => !socket.destroyed).length
  ending = true
  for (const socket of held) socket.destroy()
  const serverErrors = { quiet: errorLines(quiet), busy: errorLines(busy) }
  // The server's own view: its summary's firstFaultMs (from the handshake it read to the first fault served).
  const serverFirst = (server) =>
    stats(server.lines.filter((l) => l.event === 'summary' && Number.isFinite(l.firstFaultMs)).map((l) => l.firstFaultMs * 1000))
  await quiet.stop()
  await busy.stop()
  const serverView = { quiet: serverFirst(quiet), busy: serverFirst(busy) }
  const q = stats(results.quiet)
  const b = stats(results.busy)
  const ratio = b.p50 / q.p50
  out.push(
    `## Service: handshake to first fault served, ${CONNECTIONS} silent connections held open vs none (${RUNS} VMs each, alternating)`,
  )
  out.push('')
  out.push('| server | VMs | p50 | p90 | max | p50 vs none |')
  out.push('|---|---|---|---|---|---|')
  out.push(`| no other connection | ${q.n} | ${ms(q.p50, 2)} | ${ms(q.p90, 2)} | ${ms(q.max, 2)} | 1.00x |`)
  out.push(
    `| ${CONNECTIONS} silent connections open | ${b.n} | ${ms(b.p50, 2)} | ${ms(b.p90, 2)} | ${ms(b.max, 2)} | ${ratio.toFixed(2)}x |`,
  )
  out.push('')
  out.push(
    `Goal <= 1.2x: ${ratio <= 1.2 ? 'met' : 'NOT met'} (p50 ${ratio.toFixed(2)}x, p90 ${(b.p90 / q.p90).toFixed(2)}x). ` +
      `Measured in the VM, from its connect to the end of its first page read; each VM then read its ${PAGES} pages: ` +
      `${bytes} bytes checked, ${failures.length ? `${failures.length} VMs FAILED` : 'all right'}. ` +
      `Silent connections still open at the end: ${openAtEnd}/${CONNECTIONS}${closedEarly ? ` (${closedEarly} closed early)` : ''}; ` +
      `server error/warn lines: ${serverErrors.quiet.length} (none), ${serverErrors.busy.length} (silent). ` +
      `The servers' own firstFaultMs, p50: ${ms(serverView.quiet.p50, 2)} (none), ${ms(serverView.busy.p50, 2)} (silent).`,
  )
  out.push('')
  json.silent = {
    connections: CONNECTIONS,
    runs: RUNS,
    serverView,
    pages: PAGES,
    quietUs: results.quiet,
    busyUs: results.busy,
    quiet: q,
    busy: b,
    ratioP50: ratio,
    bytes,
    failures,
    openAtEnd,
    serverErrors,
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Churn: many restores through one server; its threads, fds, maps and RSS.

async function churn() {
  const mem = memoryFile('churn.mem', PAGES)
  const socket = socketPath()
  const server = await startServer(socket, mem)
  const samples = [{ restores: 0, ...proc(server.pid) }]
  const failures = []
  const restoreMs = []
  let bytes = 0
  let served = 0
  const summaries = () => server.lines.filter((line) => line.event === 'summary')
  const started = performance.now()
  for (let i = 1; i <= RESTORES; i++) {
    const t0 = performance.now()
    const res = await runPeer(socket, mem, PAGES)
    restoreMs.push(performance.now() - t0)
    if (res.code !== 0 || res.result?.wrong !== 0) failures.push({ i, ...res })
    else bytes += res.result.bytes
    if (i % SAMPLE_EVERY === 0 || i === RESTORES) {
      // The server's summary of every VM so far, so that none is still being let go when sampled.
      const deadline = performance.now() + 5000
      while (summaries().length < i && performance.now() < deadline) await sleep(5)
      samples.push({ restores: i, ...proc(server.pid) })
      process.stderr.write(`\rchurn: ${i}/${RESTORES}`)
    }
  }
  log('')
  const elapsedS = (performance.now() - started) / 1000
  const all = summaries()
  served = all.filter((s) => s.outcome === 'served').length
  const outcomes = {}
  for (const s of all) outcomes[s.outcome] = (outcomes[s.outcome] ?? 0) + 1
  const serverErrors = errorLines(server)
  const serverMs = all.map((s) => s.durationMs ?? s.elapsedMs).filter(Number.isFinite)
  await server.stop()
  // Flat: from the first sample after warm-up (50 restores) to the last, threads and fds equal,
  // maps and RSS within 10% (and the least-squares slope per 1,000 restores, to see a slow leak).
  const measured = samples.filter((s) => s.restores >= Math.min(SAMPLE_EVERY, RESTORES))
  const slope = (key) => {
    const n = measured.length
    if (n < 2) return Number.NaN
    const mx = measured.reduce((a, s) => a + s.restores, 0) / n
    const my = measured.reduce((a, s) => a + s[key], 0) / n
    let sxy = 0
    let sxx = 0
    for (const s of measured) {
      sxy += (s.restores - mx) * (s[key] - my)
      sxx += (s.restores - mx) ** 2
    }
    return (sxy / sxx) * 1000
  }
  const rows = [
    ['threads', 'threads', 0, (x) => String(x)],
    ['fds (/proc/PID/fd)', 'fds', 0, (x) => String(x)],
    ['mappings (/proc/PID/maps lines)', 'maps', 0.1, (x) => String(x)],
    ['RSS', 'rssKiB', 0.1, (x) => `${(x / 1024).toFixed(1)} MiB`],
  ]
  const verdicts = {}
  out.push(`## Service: churn of ${RESTORES} restores through one server (sequential stand-in VMs, sampled every ${SAMPLE_EVERY})`)
  out.push('')
  out.push(`| what | at start | first (${measured[0]?.restores}) | last (${RESTORES}) | max | slope per 1,000 restores | flat |`)
  out.push('|---|---|---|---|---|---|---|')
  for (const [label, key, slack, show] of rows) {
    const first = measured[0]?.[key]
    const last = measured[measured.length - 1]?.[key]
    const max = Math.max(...measured.map((s) => s[key]))
    const flat = last <= first * (1 + slack)
    verdicts[key] = flat
    const s = slope(key)
    out.push(
      `| ${label} | ${show(samples[0][key])} | ${show(first)} | ${show(last)} | ${show(max)} | ${key === 'rssKiB' ? `${(s / 1024).toFixed(1)} MiB` : s.toFixed(1)} | ${flat ? 'yes' : 'NO'} |`,
    )
  }
  out.push('')
  const r = stats(restoreMs)
  out.push(
    `${RESTORES} restores in ${elapsedS.toFixed(0)} s; each VM read its ${PAGES} pages: ${bytes} bytes checked, ` +
      `${failures.length ? `${failures.length} VMs FAILED` : 'all right'}; server summaries ${all.length} (${Object.entries(outcomes)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}); ` +
      `VM start to exit p50 ${r.p50.toFixed(1)} ms, p90 ${r.p90.toFixed(1)} ms, max ${r.max.toFixed(1)} ms; server error/warn lines: ${serverErrors.length}.`,
  )
  out.push('')
  json.churn = {
    restores: RESTORES,
    pages: PAGES,
    samples,
    verdicts,
    bytes,
    served,
    outcomes,
    failures: failures.slice(0, 20),
    failureCount: failures.length,
    restoreMs: r,
    serverMs: serverMs.length ? stats(serverMs) : undefined,
    serverErrors: serverErrors.slice(0, 20),
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Restart under a running VM: kill -9 the server, start it again with the same --socket.
//
// Runs only when the server has its keeper (a process that holds the VMs' userfaultfds and
// handshakes across the server's restarts: `--keeper`, issue 18). The VM touches a fresh page every
// LOOP_PAUSE_US (each a missing fault: the page is dropped just before), checking every byte; its
// stall is its longest single touch in a window that holds the whole restart; after each restart it drops every page and reads them all again through the
// new server (a sweep), checking every byte.

/** Pids of processes whose command line names `path` (the keeper started for this run). */
function processesNaming(path) {
  const pids = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').includes(path)) pids.push(Number(entry))
    } catch {}
  }
  return pids
}

async function keeperAfter(path) {
  const deadline = performance.now() + 15_000
  let pids = processesNaming(path)
  while (pids.length && performance.now() < deadline) {
    await sleep(100)
    pids = processesNaming(path)
  }
  for (const pid of pids) process.kill(pid, 'SIGKILL')
  return pids
}

function keeperInHelp() {
  const help = spawnSync(process.execPath, [CLI, 'firecracker', '--help'], { encoding: 'utf8' })
  return `${help.stdout}${help.stderr}`.includes('--keeper')
}

async function restartUnderRunningVm() {
  if (!keeperInHelp()) {
    skip('restart under a running VM', 'the server has no keeper yet (`firecracker --help` does not mention --keeper)')
    json.restart = { skipped: 'no --keeper in firecracker --help' }
    return
  }
  const keeperSocket = join(dir, 'keeper.sock')
  const keeperArgs = values['keeper-args']?.split(/\s+/).filter(Boolean) ?? ['--keeper', keeperSocket]
  const mem = memoryFile('restart.mem', LOOP_PAGES)
  const socket = socketPath()
  let server = await startServer(socket, mem, keeperArgs)
  const vm = spawn(PEER, [socket, mem, String(LOOP_PAGES), '--loop', String(LOOP_PAUSE_US)], { stdio: ['pipe', 'pipe', 'pipe'] })
  vm.stdout.setEncoding('utf8')
  const vmLines = lineReader(vm.stdout)
  let vmErr = ''
  vm.stderr.on('data', (chunk) => {
    vmErr += chunk
  })
  const vmExit = new Promise((resolveExit) => vm.on('exit', (code, signal) => resolveExit({ code, signal })))
  /** Sends a command to the VM and waits for its answer (a frozen VM answers never: `ms` bounds it). */
  const ask = async (command, key, timeoutMs) => {
    const from = vmLines.lines.length
    vm.stdin.write(command)
    return vmLines.next((line) => line[key] === true, timeoutMs, from)
  }
  const restarts = []
  const failures = []
  let bytes = 0
  let frozen
  try {
    await sleep(300)
    const warm = await ask('m', 'window', 10_000)
    if (!(warm.touches > 0)) throw new Error(`the VM made no progress before the first restart: ${JSON.stringify(warm)}`)
    for (let i = 1; i <= RESTARTS; i++) {
      const before = await ask('m', 'window', 10_000)
      const t0 = performance.now()
      const gone = server.exited
      server.child.kill('SIGKILL')
      await gone
      server = await startServer(socket, mem, keeperArgs)
      const restartMs = performance.now() - t0
      // The restart is done when the new server has taken the VM back from the keeper and serves it.
      await server.next((line) => line.event === 'resume', 10_000)
      const resumedMs = performance.now() - t0
      // Let the VM run on the new server for a while, then read the window that held the restart.
      await sleep(100)
      let window
      try {
        window = await ask('m', 'window', 10_000)
      } catch {
        frozen = { restart: i, restartMs, note: 'the VM did not answer within 10 s of the restart: frozen' }
        break
      }
      const sweep = await ask('f', 'sweep', 30_000)
      bytes += sweep.bytes
      const row = {
        i,
        restartMs,
        resumedMs,
        stallMs: window.maxGapUs / 1000,
        touches: window.touches,
        wrong: window.wrong + before.wrong,
        sweepWrong: sweep.wrong,
        sweepMs: sweep.us / 1000,
      }
      restarts.push(row)
      if (row.wrong || row.sweepWrong) failures.push(row)
      process.stderr.write(`\rrestart: ${i}/${RESTARTS}`)
    }
  } catch (error) {
    failures.push({ error: String(error) })
  }
  log('')
  let totals
  if (vm.exitCode === null && vm.signalCode === null) {
    vm.stdin.write('q')
    totals = await vmLines.next((line) => line.done === true, 10_000).catch(() => undefined)
  }
  const vmEnd = await Promise.race([vmExit, sleep(2000).then(() => undefined)]).then((how) => {
    if (how) return how
    vm.kill('SIGKILL')
    return vmExit
  })
  const serverErrors = errorLines(server)
  await server.stop()
  // The keeper the first server started (detached, not our child): with its VM gone and no server,
  // it should end by itself. Say whether it did, and end it (by its pid) if not.
  const keeperLeft = await keeperAfter(keeperSocket)
  const stall = stats(restarts.map((r) => r.stallMs))
  const restart = stats(restarts.map((r) => r.restartMs))
  const resumed = stats(restarts.map((r) => r.resumedMs))
  // The restart ends when the new server serves the VM again (its `resume` line): the stall past
  // that is what the server adds on top of its own start.
  const over = restarts.filter((r) => r.stallMs > r.resumedMs + 50)
  const overListening = restarts.filter((r) => r.stallMs > r.restartMs + 50)
  out.push(
    `## Service: restart under a running VM (kill -9 the server, start it again with the same --socket; ${restarts.length}/${RESTARTS} restarts)`,
  )
  out.push('')
  out.push('| what | p50 | p90 | max |')
  out.push('|---|---|---|---|')
  out.push(
    `| restart: kill -9 to the new server's \`listening\` | ${restart.p50?.toFixed(1)} ms | ${restart.p90?.toFixed(1)} ms | ${restart.max?.toFixed(1)} ms |`,
  )
  out.push(
    `| restart: kill -9 to the new server's \`resume\` (the VM taken back from the keeper) | ${resumed.p50?.toFixed(1)} ms | ${resumed.p90?.toFixed(1)} ms | ${resumed.max?.toFixed(1)} ms |`,
  )
  out.push(
    `| stall: the VM's longest page touch over the restart | ${stall.p50?.toFixed(1)} ms | ${stall.p90?.toFixed(1)} ms | ${stall.max?.toFixed(1)} ms |`,
  )
  out.push('')
  out.push(
    `Goal, each stall <= its restart (to \`resume\`) + 50 ms: ${over.length === 0 && restarts.length === RESTARTS ? 'met' : 'NOT met'} (${over.length} over; ${overListening.length} over \`listening\` + 50 ms). ` +
      `After each restart the VM dropped and read again all ${LOOP_PAGES} pages through the new server: ${bytes} bytes checked in sweeps, ` +
      `${totals ? `${totals.bytes} in all` : 'totals not reported'}, ${failures.length ? `${failures.length} FAILED` : 'all right'}` +
      `${frozen ? `; FROZEN at restart ${frozen.restart}` : ''}; the VM ${totals && vmEnd.code === 0 ? 'finished (exit 0)' : `ended ${JSON.stringify(vmEnd)}`}` +
      `${vmErr ? ` (stderr: ${vmErr.trim().slice(0, 200)})` : ''}; server error/warn lines after the last restart: ${serverErrors.length}; ` +
      `${keeperLeft.length ? `the keeper was STILL RUNNING 15 s after the last server stopped (killed: ${keeperLeft.join(', ')})` : 'the keeper ended by itself'}.`,
  )
  out.push('')
  json.restart = {
    keeperLeft,
    restarts,
    stall,
    restart,
    resumed,
    over: over.length,
    overListening: overListening.length,
    failures,
    frozen,
    totals,
    keeperArgs,
    loopPages: LOOP_PAGES,
    loopPauseUs: LOOP_PAUSE_US,
  }
}

// ---------------------------------------------------------------------------------------------

if (parts.has('silent')) await silentConnections()
if (parts.has('churn')) await churn()
if (parts.has('restart')) await restartUnderRunningVm()
const flags = process.argv.slice(2).join(' ')
out.push(`Reproduce: npm run build && node bench/service.mjs${flags ? ` ${flags}` : ''}`)
console.log(out.join('\n'))
const jsonPath = resolve(values.json ?? join(values.out ?? '.', 'userfaultfd-bench-service.json'))
mkdirSync(dirname(jsonPath), { recursive: true })
writeFileSync(jsonPath, JSON.stringify(json, null, 1))
log(`results: ${jsonPath}`)
