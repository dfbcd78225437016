#!/usr/bin/env node
// Snapshot restore of a real Firecracker with its memory in a store (issue 19): the handler
// `userfaultfd firecracker --once` serving the local memory file, or a snapshot pushed to SeaweedFS
// (`userfaultfd snapshot push`) read directly (+0 ms) or through a TCP proxy that holds every
// request DELAY ms (bench/object-proxy.mjs), each with and without the previous restore's
// working-set trace (--working-set FILE: a recording restore first, the later ones replay it),
// alternating run by run; then a dead store: SeaweedFS killed (SIGKILL, by its pid) after the
// guest's first tick, timed until the server kills the VM and says why.
//
//   FCWORK=... FIRECRACKER=... FIRECRACKER_EXAMPLES=... node bench/firecracker-store.mjs \
//     [--rounds N] [--delay-ms N] [--json FILE] [--no-dead-store]
//
// It needs a Firecracker built beside the project, a snapshot of the test guest and its driver
// drive.py (../shared/firecracker/README.md; DRIVE, default ../shared/firecracker/drive.py beside a
// checkout), SeaweedFS's `weed` (WEED, default .tools/venv/bin/weed) and the built dist/. Without
// them it says so in one `skipped:` line and exits 0. Only 127.0.0.1 is contacted. JSON in FILE,
// else userfaultfd-bench-firecracker-store.json in the current folder.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { startSeaweed } from '../scripts/seaweed.mjs'
import { median, safeJson } from './common.mjs'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    'delay-ms': { type: 'string', default: '10' },
    json: { type: 'string' },
    'no-dead-store': { type: 'boolean', default: false },
  },
})
const ROUNDS = Number(values.rounds)
const DELAY = Number(values['delay-ms'])
const DRIVE = process.env.DRIVE ?? join(ROOT, '..', 'shared', 'firecracker', 'drive.py')
const WEED = process.env.WEED ?? join(ROOT, '.tools', 'venv', 'bin', 'weed')
const CLI = join(ROOT, 'dist', 'lib', 'cli.js')
const FCWORK = process.env.FCWORK
const unset = ['FCWORK', 'FIRECRACKER', 'FIRECRACKER_EXAMPLES'].filter((name) => !process.env[name])
const missing = unset.length
  ? `${unset.join(', ')} not set`
  : !existsSync(DRIVE)
    ? `no driver at ${DRIVE} (set DRIVE)`
    : !existsSync(join(FCWORK, 'snap', 'vm.mem'))
      ? `no snapshot in ${FCWORK}/snap (drive.py snapshot)`
      : !existsSync(WEED)
        ? `no SeaweedFS at ${WEED} (set WEED)`
        : !existsSync(CLI)
          ? 'no dist/lib/cli.js (npm run build)'
          : undefined
if (missing) {
  console.error(`skipped: firecracker-store: needs a Firecracker build, a guest snapshot, its driver drive.py and SeaweedFS; ${missing}`)
  process.exit(0)
}
// Never an instance-metadata service: the store is on loopback, the requests unsigned.
process.env.AWS_EC2_METADATA_DISABLED = 'true'
const MEM = join(FCWORK, 'snap', 'vm.mem')
const FILE_TRACE = join(FCWORK, 'file.trace')
const STORE_TRACE = join(FCWORK, 'store.trace')
const log = (text) => process.stderr.write(`${text}\n`)

const fmt = (x, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : '-')

// --- The store: SeaweedFS with the snapshot pushed, and a proxy adding DELAY ms to every request.
const store = await startSeaweed(WEED, 'snap')
const { port: storePort } = new URL(store.endpoint)
const weedPid = findPid(`-s3.port=${storePort}`)
log(`SeaweedFS at ${store.endpoint} (pid ${weedPid})`)
const children = [] // every process this script starts and keeps, stopped at the end by pid
let proxy
try {
  const pushed = Date.now()
  const push = spawnSync(
    process.execPath,
    [CLI, 'snapshot', 'push', MEM, 's3://snap/vm.mem', '--endpoint', store.endpoint, '--anonymous'],
    {
      encoding: 'utf8',
    },
  )
  if (push.status !== 0) throw new Error(`snapshot push failed: ${push.stderr}${push.stdout}`)
  const pushSeconds = (Date.now() - pushed) / 1000
  log(`pushed in ${pushSeconds.toFixed(1)} s: ${push.stdout.trim().split('\n').pop()}`)
  // The bound of any restore from the store: every data chunk fetched, decompressed and checked
  // with the source's defaults (16 in flight), nothing else running; median of 3.
  const { Source } = await import(join(ROOT, 'dist', 'index.js'))
  const raws = []
  for (let i = 0; i < 3; i++) {
    const source = await Source.objectStore('s3://snap/vm.mem', { endpoint: store.endpoint, anonymous: true, env: {} })
    const { ms } = await source.readRaw()
    raws.push({ ms, mib: source.objectStats.bytesFetched / 2 ** 20 })
  }
  const raw = { ms: median(raws.map((r) => r.ms)), mib: raws[0].mib }
  log(`the store's raw read of the pushed snapshot: ${raw.mib.toFixed(1)} MiB in ${raw.ms.toFixed(0)} ms (median of 3)`)

  proxy = spawn(process.execPath, [join(ROOT, 'bench', 'object-proxy.mjs'), `127.0.0.1:${storePort}`], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  children.push(proxy)
  const proxyLines = createInterface({ input: proxy.stdout })[Symbol.asyncIterator]()
  const proxyPort = JSON.parse((await proxyLines.next()).value).port
  proxy.stdin.write(`delay ${DELAY}\n`)
  if ((await proxyLines.next()).value !== 'ok') throw new Error('the proxy did not take its delay')
  const proxied = `http://127.0.0.1:${proxyPort}`

  // --- The handlers compared: drive.py's HANDLER_CMD ({sock}, {mem} filled in by drive.py).
  const base = `exec ${process.execPath} ${CLI} firecracker --socket {sock} --once`
  const fromStore = (endpoint) => `${base} --mem s3://snap/vm.mem --endpoint ${endpoint} --anonymous`
  const CONFIGS = {
    file: { label: 'local file', command: `${base} --mem {mem}` },
    fileTrace: { label: 'local file, previous trace', command: `${base} --mem {mem} --working-set ${FILE_TRACE}` },
    push0: { label: 'pushed snapshot, +0 ms', command: fromStore(store.endpoint) },
    push0Trace: { label: 'pushed snapshot, +0 ms, previous trace', command: `${fromStore(store.endpoint)} --working-set ${STORE_TRACE}` },
    pushDelay: { label: `pushed snapshot, +${DELAY} ms`, command: fromStore(proxied) },
    pushDelayTrace: {
      label: `pushed snapshot, +${DELAY} ms, previous trace`,
      command: `${fromStore(proxied)} --working-set ${STORE_TRACE}`,
    },
  }
  // Each traced configuration is compared with the local file's own kind.
  const REFERENCE = {
    file: 'file',
    fileTrace: 'fileTrace',
    push0: 'file',
    push0Trace: 'fileTrace',
    pushDelay: 'file',
    pushDelayTrace: 'fileTrace',
  }

  const restore = (command, runId) => {
    rmSync(join(FCWORK, 'runs', `${runId}-cmd`), { recursive: true, force: true })
    const env = { ...process.env, HANDLER_CMD: command }
    const result = spawnSync('python3', [DRIVE, 'restore', 'cmd', runId], { env, encoding: 'utf8', timeout: 300_000 })
    const file = join(FCWORK, 'runs', `${runId}-cmd`, 'result.json')
    if (!existsSync(file)) throw new Error(`drive.py made no result for ${runId}: ${result.stderr}`)
    const res = JSON.parse(readFileSync(file, 'utf8'))
    const lines = handlerLines(runId)
      .map(({ json }) => json)
      .filter(Boolean)
    return { ...res, summary: lines.find((line) => line.event === 'summary'), trace: lines.find((line) => line.event === 'trace') }
  }

  // --- The previous restore's trace: a recording restore of each memory first (on demand).
  rmSync(FILE_TRACE, { force: true })
  rmSync(STORE_TRACE, { force: true })
  const recordings = {}
  for (const [name, trace] of [
    ['fileTrace', FILE_TRACE],
    ['push0Trace', STORE_TRACE],
  ]) {
    const res = restore(CONFIGS[name].command, `store-record-${name}`)
    recordings[name] = { toChecksum: res.to_csum_s, csumOk: res.csum_ok, trace: res.trace, summary: res.summary }
    log(
      `recording ${name}: checksum ${res.csum_ok ? 'ok' : 'WRONG'} at ${fmt(res.to_csum_s, 3)} s, trace ${res.trace?.pages ?? 'NONE'} pages`,
    )
    if (!res.csum_ok || !existsSync(trace)) throw new Error(`the recording restore ${name} failed: ${JSON.stringify(res).slice(0, 600)}`)
  }

  // --- Rounds: every configuration once a round, the order rotated round by round.
  const names = Object.keys(CONFIGS)
  const results = Object.fromEntries(names.map((name) => [name, []]))
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + round) % names.length]
      const res = restore(CONFIGS[name].command, `store-${round}-${name}`)
      results[name].push(res)
      log(
        `round ${round + 1}/${ROUNDS} ${name}: checksum ${res.csum_ok ? 'ok' : 'WRONG'} at ${fmt(res.to_csum_s, 3)} s ` +
          `(first tick ${fmt(res.to_first_tick_s, 3)} s), replayed ${res.summary?.replayedPages ?? '-'} pages, ${res.summary?.store?.requests ?? '-'} GETs, outcome ${res.summary?.outcome ?? '-'}`,
      )
    }
  }

  const rows = names.map((name) => {
    const runs = results[name]
    return {
      name,
      label: CONFIGS[name].label,
      checksumsOk: runs.filter((r) => r.csum_ok).length,
      runs: runs.length,
      toFirstTick: median(runs.map((r) => r.to_first_tick_s)),
      toChecksums: runs.map((r) => r.to_csum_s),
      toChecksum: median(runs.map((r) => r.to_csum_s)),
      replayedPages: median(runs.map((r) => r.summary?.replayedPages)),
      faultP50Micros: median(runs.map((r) => r.summary?.faultP50Micros)),
      handlerCpu: median(runs.map((r) => r.handler_cpu_s)),
      // The store's requests and MiB per restore (the summary's `store`), every run: a chunk
      // fetched twice shows as an outlier.
      requests: runs.map((r) => r.summary?.store?.requests),
      mibFetched: runs.map((r) => (r.summary?.store ? r.summary.store.bytesFetched / 2 ** 20 : undefined)),
    }
  })
  for (const row of rows) {
    const reference = rows.find((r) => r.name === REFERENCE[row.name])
    row.ratio = reference?.toChecksum ? row.toChecksum / reference.toChecksum : undefined
    row.versus = reference?.label
  }

  // --- A dead store: the pushed snapshot at +0 ms with the defaults; SeaweedFS killed after the first tick.
  let dead
  if (!values['no-dead-store']) dead = await deadStore(fromStore(store.endpoint), store)

  const out = [
    `## Firecracker restore from a store (1 GiB guest, 384 MiB read back; ${ROUNDS} rounds alternating, medians)`,
    '',
    '| memory | to first tick (s) | to first post-restore checksum (s) | median | vs | ratio | replayed pages | GETs | MiB fetched | checksums right |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for (const row of rows) {
    out.push(
      `| ${row.label} | ${fmt(row.toFirstTick, 3)} | ${row.toChecksums.map((x) => fmt(x, 3)).join(', ')} | ${fmt(row.toChecksum, 3)} | ` +
        `${row.versus} | ${row.ratio === undefined ? '-' : `${row.ratio.toFixed(2)}x`} | ${fmt(row.replayedPages, 0)} | ` +
        `${row.requests.map((x) => fmt(x, 0)).join(', ')} | ${row.mibFetched.map((x) => fmt(x, 0)).join(', ')} | ${row.checksumsOk}/${row.runs} |`,
    )
  }
  out.push(
    '',
    `Recording restores (on demand): local file ${fmt(recordings.fileTrace.toChecksum, 3)} s, pushed +0 ms ${fmt(recordings.push0Trace.toChecksum, 3)} s. Push: ${pushSeconds.toFixed(1)} s.`,
    `The store's raw read of the pushed snapshot (every data chunk fetched, decompressed and checked, 16 in flight, +0 ms, nothing else running): ${raw.mib.toFixed(1)} MiB in ${fmt(raw.ms / 1000, 3)} s: no restore that reads it all can be faster.`,
  )
  if (dead) {
    out.push(
      '',
      `Dead store: SeaweedFS (pid ${weedPid}) killed ${fmt(dead.killAfterLoadS, 3)} s after the load request (first tick at ${fmt(dead.firstTickS, 3)} s); ` +
        `the server said ERR_UFFD_PEER_KILLED ${fmt(dead.killedAfterS, 3)} s after, summary outcome ${dead.summary?.outcome ?? '-'} ${fmt(dead.summaryAfterS, 3)} s after; ` +
        `${dead.killedLines} ERR_UFFD_PEER_KILLED line(s), ${dead.errorLines} error line(s); checksum ${dead.result.csum ?? 'none'}; ` +
        `retry bound 8 retries (50 ms doubling to 2 s: 7.15 s of backoff) or 10 s.`,
    )
    for (const line of dead.lines) out.push(`    ${line}`)
  }
  out.push(
    '',
    `Reproduce: FCWORK=... FIRECRACKER=... FIRECRACKER_EXAMPLES=... node bench/firecracker-store.mjs --rounds ${ROUNDS} --delay-ms ${DELAY}`,
  )
  console.log(out.join('\n'))
  const json = { rounds: ROUNDS, delayMs: DELAY, pushSeconds, rawRead: raw, rows, recordings, results, dead }
  const jsonPath = resolve(values.json ?? 'userfaultfd-bench-firecracker-store.json')
  mkdirSync(dirname(jsonPath), { recursive: true })
  writeFileSync(jsonPath, JSON.stringify(json, null, 1))
  log(`results: ${jsonPath}`)
} finally {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  store.stop() // SIGKILL to weed's pid, its folder removed
}

/** The handler's output lines of a restore, with drive.py's monotonic time (s) of each. */
function handlerLines(runId) {
  const file = join(FCWORK, 'runs', `${runId}-cmd`, 'handler.txt')
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const at = line.indexOf(' ')
      return { t: Number(line.slice(0, at)), text: line.slice(at + 1), json: safeJson(line.slice(at + 1)) }
    })
}

/** drive.py's serial lines of a restore: [monotonic time (s), text]. */
function serialLines(runId) {
  const file = join(FCWORK, 'runs', `${runId}-cmd`, 'serial.txt')
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => [Number(line.slice(0, line.indexOf(' '))), line.slice(line.indexOf(' ') + 1)])
}

/** The pid of the process whose command line holds `marker` (weed, which startSeaweed keeps to itself). */
function findPid(marker) {
  const ps = spawnSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' })
  const line = ps.stdout.split('\n').find((l) => l.includes(marker) && l.includes(' server '))
  return line ? Number(line.trim().split(/\s+/)[0]) : undefined
}

async function deadStore(command, seaweed) {
  const runId = 'store-dead'
  const dir = join(FCWORK, 'runs', `${runId}-cmd`)
  rmSync(dir, { recursive: true, force: true })
  const driver = spawn('python3', [DRIVE, 'restore', 'cmd', runId], { env: { ...process.env, HANDLER_CMD: command }, stdio: 'ignore' })
  children.push(driver)
  const done = new Promise((ok) => driver.on('close', ok))
  // The load request is sent once Firecracker's API answers: its time is the first serial line's
  // at the latest; the first tick after the restore is the first `tick` line.
  let tick
  for (const started = Date.now(); !tick && Date.now() - started < 60_000; ) {
    await new Promise((ok) => setTimeout(ok, 5))
    tick = serialLines(runId).find(([, text]) => /^tick \d+$/.test(text))
  }
  if (!tick) throw new Error('the dead-store restore never ticked')
  const killedAt = Number(process.hrtime.bigint()) / 1e9 // CLOCK_MONOTONIC, as drive.py's time.monotonic()
  seaweed.stop()
  log(`dead store: SeaweedFS killed after "${tick[1]}"`)
  await done
  const result = JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8'))
  const lines = handlerLines(runId)
  const killed = lines.find(({ json }) => json?.code === 'ERR_UFFD_PEER_KILLED')
  const summary = lines.find(({ json }) => json?.event === 'summary')
  // The load's start: drive.py's to_first_tick_s back from the tick's time.
  const loadAt = result.to_first_tick_s === undefined ? undefined : tick[0] - result.to_first_tick_s
  return {
    result,
    firstTickS: result.to_first_tick_s,
    killAfterLoadS: loadAt === undefined ? undefined : killedAt - loadAt,
    killedAfterS: killed ? killed.t - killedAt : undefined,
    summaryAfterS: summary ? summary.t - killedAt : undefined,
    summary: summary?.json,
    killedLines: lines.filter(({ json }) => json?.code === 'ERR_UFFD_PEER_KILLED').length,
    errorLines: lines.filter(({ json }) => json?.event === 'error').length,
    lines: lines.map(({ t, text }) => `${t >= killedAt ? '+' : ''}${(t - killedAt).toFixed(3)} s ${text}`),
  }
}
