#!/usr/bin/env node
// Snapshot restore of a real Firecracker, handlers side by side: this package's
// `userfaultfd firecracker` (default options; and replaying a trace recorded on a first restore)
// next to Firecracker's own example handlers (uffd_on_demand_handler, uffd_fault_all_handler),
// alternating run by run, and four restores at once through one server.
//
//   node bench/firecracker.mjs [--runs N] [--json FILE] [--concurrent-only]
//
// (also `npx userfaultfd-bench --scenario firecracker`). It needs a Firecracker built beside the
// project and a snapshot of the test guest, as ../shared/firecracker/README.md says (nothing of
// Firecracker, nor its driver drive.py, is in this repository or the package): the environment of
// drive.py (FCWORK, FIRECRACKER, FIRECRACKER_EXAMPLES) and DRIVE, the path of drive.py (default
// ../shared/firecracker/drive.py beside a checkout). Without them it says so in one `skipped:`
// line and exits 0. JSON in FILE, else userfaultfd-bench-firecracker.json in the current folder. Each restore's figures come from drive.py:
// from `PUT /snapshot/load` to the guest's first tick and to its first post-restore checksum (384
// MiB read back), the checksum read itself, the handler's CPU time and peak RSS; the handler's
// own summary line adds faults and fault latency.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { median, safeJson } from './common.mjs'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const { values } = parseArgs({
  options: { runs: { type: 'string', default: '5' }, json: { type: 'string' }, 'concurrent-only': { type: 'boolean', default: false } },
})
const RUNS = Number(values.runs)
const DRIVE = process.env.DRIVE ?? join(ROOT, '..', 'shared', 'firecracker', 'drive.py')
const FCWORK = process.env.FCWORK
const unset = ['FCWORK', 'FIRECRACKER', 'FIRECRACKER_EXAMPLES'].filter((name) => !process.env[name])
const missing = unset.length
  ? `${unset.join(', ')} not set`
  : !existsSync(DRIVE)
    ? `no driver at ${DRIVE} (set DRIVE)`
    : !existsSync(join(FCWORK, 'snap', 'vm.mem'))
      ? `no snapshot in ${FCWORK}/snap (drive.py snapshot)`
      : undefined
if (missing) {
  console.error(`skipped: firecracker: needs a Firecracker build, a guest snapshot and its driver drive.py, none shipped; ${missing}`)
  process.exit(0)
}
const CLI = join(ROOT, 'dist', 'lib', 'cli.js')
const TRACE = join(FCWORK, 'bench.trace')
const cli = (args) => `exec ${process.execPath} ${CLI} firecracker --socket {sock} --mem {mem} --once ${args}`

/** The handlers compared: drive.py's KIND and, for `cmd`, the command. */
const HANDLERS = {
  ours: { kind: 'cmd', command: cli(''), label: 'userfaultfd firecracker (defaults)' },
  replay: { kind: 'cmd', command: cli(`--replay ${TRACE}`), label: 'userfaultfd firecracker --replay' },
  fc: { kind: 'fc', label: "Firecracker's uffd_on_demand_handler" },
  fcall: { kind: 'fcall', label: "Firecracker's uffd_fault_all_handler" },
}

function restore(handler, runId, extraEnv = {}) {
  const env = { ...process.env, ...extraEnv, ...(handler.command ? { HANDLER_CMD: handler.command } : {}) }
  const result = spawnSync('python3', [DRIVE, 'restore', handler.kind, runId], { env, encoding: 'utf8', timeout: 300_000 })
  const file = join(FCWORK, 'runs', `${runId}-${handler.kind}`, 'result.json')
  if (!existsSync(file)) throw new Error(`drive.py made no result for ${runId}: ${result.stderr}`)
  const res = JSON.parse(readFileSync(file, 'utf8'))
  const summary = (res.handler_out ?? []).map((line) => safeJson(line)).find((line) => line?.event === 'summary')
  return { ...res, summary }
}

const range = (xs) => {
  const s = xs.filter((x) => typeof x === 'number')
  return s.length ? [Math.min(...s), Math.max(...s)] : undefined
}

// A first restore records the working set (on demand, no prefetch) for the replay runs.
const alternating = !values['concurrent-only']
let recording
if (alternating) {
  process.stderr.write('recording a working-set trace...\n')
  rmSync(TRACE, { force: true })
  recording = restore({ kind: 'cmd', command: cli(`--record ${TRACE}`) }, 'bench-record')
  if (!recording.csum_ok || !existsSync(TRACE)) throw new Error(`the recording restore failed: ${JSON.stringify(recording).slice(0, 400)}`)
}

const results = Object.fromEntries(Object.keys(HANDLERS).map((name) => [name, []]))
const names = Object.keys(HANDLERS)
for (let run = 0; alternating && run < RUNS; run++) {
  // Rotate the order run by run: the machine is noisy, and no handler always goes first.
  for (let i = 0; i < names.length; i++) {
    const name = names[(i + run) % names.length]
    const res = restore(HANDLERS[name], `bench-${run}-${name}`)
    results[name].push(res)
    process.stderr.write(
      `run ${run + 1}/${RUNS} ${name}: checksum ${res.csum_ok ? 'ok' : 'WRONG'} at ${res.to_csum_s?.toFixed(2)} s, read ${res.csum_read_s?.toFixed(3)} s\n`,
    )
  }
}

// Four restores at once through one server: drive.py's handler for each is a symlink to its socket.
// On demand (no prefetch), so that the guests fault and the fault latencies compare.
async function concurrent(count) {
  const socket = join(FCWORK, `bench-shared-${count}.sock`)
  const server = spawn(
    process.execPath,
    [CLI, 'firecracker', '--socket', socket, '--mem', join(FCWORK, 'snap', 'vm.mem'), '--connect-timeout-ms', '0', '--no-prefetch'],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  )
  const lines = []
  server.stdout.on('data', (chunk) => lines.push(...String(chunk).trim().split('\n').map(safeJson)))
  while (!existsSync(socket)) await new Promise((resolve) => setTimeout(resolve, 20))
  const link = (runId) => {
    const dir = join(FCWORK, 'runs', `${runId}-cmd`)
    mkdirSync(dir, { recursive: true })
    return dir
  }
  const runs = Array.from({ length: count }, (_, i) => `bench-concurrent-${count}-${i}`)
  for (const runId of runs) link(runId)
  const command = `rm -f {sock}; ln -s ${socket} {sock}; exec sleep 600`
  const children = runs.map(
    (runId) =>
      new Promise((resolve) => {
        const child = spawn('python3', [DRIVE, 'restore', 'cmd', runId], { env: { ...process.env, HANDLER_CMD: command }, stdio: 'ignore' })
        child.on('close', () => resolve(JSON.parse(readFileSync(join(FCWORK, 'runs', `${runId}-cmd`, 'result.json'), 'utf8'))))
      }),
  )
  const done = await Promise.all(children)
  await new Promise((resolve) => setTimeout(resolve, 1000))
  server.kill('SIGTERM')
  await new Promise((resolve) => server.on('close', resolve))
  const summaries = lines.filter((line) => line?.event === 'summary')
  return { restores: done, summaries }
}

process.stderr.write('one restore through a shared server, then four at once...\n')
const lone = await concurrent(1)
const four = await concurrent(4)

const rows = Object.entries(results).map(([name, runs]) => {
  const pick = (key) => runs.map((r) => r[key])
  return {
    name,
    label: HANDLERS[name].label,
    runs: runs.length,
    checksumsOk: runs.filter((r) => r.csum_ok).length,
    toFirstTick: median(pick('to_first_tick_s')),
    toChecksum: median(pick('to_csum_s')),
    toChecksumRange: range(pick('to_csum_s')),
    checksumRead: median(pick('csum_read_s')),
    checksumReadRange: range(pick('csum_read_s')),
    handlerCpu: median(pick('handler_cpu_s')),
    handlerRssMiB: median(pick('handler_hwm_kib').map((k) => (k === undefined ? undefined : k / 1024))),
    faults: median(runs.map((r) => r.summary?.faults)),
    faultP50Micros: median(runs.map((r) => r.summary?.faultP50Micros)),
  }
})
const onDemand = rows.find((row) => row.name === 'fc')
const fmt = (x, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : '-')
const out = []
if (alternating) out.push(`## Firecracker snapshot restore (1 GiB guest, 384 MiB read back; ${RUNS} runs alternating, medians [min-max])`)
if (alternating) out.push('')
if (alternating)
  out.push(
    '| handler | to first tick (s) | to first checksum (s) | vs on-demand | checksum read (s) | faults | handler CPU (s) | handler peak RSS (MiB) | checksums right |',
  )
if (alternating) out.push('|---|---|---|---|---|---|---|---|---|')
for (const row of alternating ? rows : []) {
  const ratio = onDemand?.toChecksum ? `${(row.toChecksum / onDemand.toChecksum).toFixed(2)}x` : '-'
  out.push(
    `| ${row.label} | ${fmt(row.toFirstTick)} | ${fmt(row.toChecksum)} [${fmt(row.toChecksumRange?.[0])}-${fmt(row.toChecksumRange?.[1])}] | ${ratio} | ${fmt(row.checksumRead, 3)} [${fmt(row.checksumReadRange?.[0], 3)}-${fmt(row.checksumReadRange?.[1], 3)}] | ${fmt(row.faults, 0)} | ${fmt(row.handlerCpu)} | ${fmt(row.handlerRssMiB, 1)} | ${row.checksumsOk}/${row.runs} |`,
  )
}
const p50 = (summaries) => median(summaries.map((s) => s.faultP50Micros))
out.push('')
out.push(
  `Four restores at once through one server, on demand (--no-prefetch): checksums right ${four.restores.filter((r) => r.csum_ok).length}/4, ` +
    `handler fault latency p50 ${fmt(p50(four.summaries), 0)} us vs ${fmt(p50(lone.summaries), 0)} us for a lone restore ` +
    `(${p50(lone.summaries) ? (p50(four.summaries) / p50(lone.summaries)).toFixed(2) : '-'}x); to first checksum ${fmt(median(four.restores.map((r) => r.to_csum_s)))} s median ` +
    `vs ${fmt(median(lone.restores.map((r) => r.to_csum_s)))} s lone (the guests busy-wait and share 2 CPUs).`,
)
out.push('')
out.push(`Reproduce: FCWORK=... FIRECRACKER=... FIRECRACKER_EXAMPLES=... node bench/firecracker.mjs --runs ${RUNS}`)
console.log(out.join('\n'))
const json = { runs: RUNS, rows, recording: recording && { toChecksum: recording.to_csum_s, summary: recording.summary }, lone, four }
const jsonPath = resolve(values.json ?? 'userfaultfd-bench-firecracker.json')
mkdirSync(dirname(jsonPath), { recursive: true })
writeFileSync(jsonPath, JSON.stringify(json, null, 1))
process.stderr.write(`results: ${jsonPath}\n`)
