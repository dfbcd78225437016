#!/usr/bin/env node
// The residency-limit bench (issue 20): a registration with `maxResident` next to its unbounded
// counterpart and a plain mmap of the same local file, measured side by side in one run.
//
//   node bench/residency.mjs [--quick] [--size 4G] [--limit 256M] [--reps N] [--out DIR] [--json FILE] [--data DIR] [--scenario scan|random]...
//
// 1. scan: one byte per page, in order, of a file source (default 4 GiB) on the main thread, each
//    byte checked: Source.file with adaptive readahead (16 pages, up to 512) and maxResident
//    (default 256 MiB; water marks 90/70 %) vs the same source with no limit vs the same stride
//    through mmap(2) of the file (bench/residency-scan.c, built with CC, default cc, into a
//    temporary folder). Goals: throughput >= 0.8x the unbounded scan; peak RSS growth <= 1.1x the
//    limit. The peak RSS is the higher of the process's VmHWM, reset (5 > /proc/self/clear_refs)
//    just before the scan, and its VmRSS sampled every 10 ms by this process while a child scans
//    (the kernel updates VmHWM only now and then: it missed peaks here); its growth is that peak
//    minus VmRSS just before the scan. The region's own Rss (its line in /proc/PID/smaps, a walk
//    of its page tables that is not atomic: a sliding window can be over-counted) is sampled every
//    100 ms; at the end the child reads it itself.
// 2. random reads over a hot set of 60 % of the limit (random pages across the file): a warm-up
//    pass touches each hot page once, then random reads of random bytes of hot pages; the share
//    served without a re-fault after warm-up is 1 - (re-faults after warm-up) / reads, from
//    stats.residency.refaults (goal >= 95 %). Also with adaptive readahead, and with 10 % of the
//    reads going to cold pages anywhere in the file (what FIFO eviction does to a hot set).
// 3. random writes through a writable file source, then flush(): bench/write-back.mjs (a `skipped:` line here).
// 4. the object-store scan with a limit: bench/residency-store.mjs (a `skipped:` line here).
//
// Every measurement runs in a child process of its own (this script with --child), one at a time,
// contenders rotating from one repetition to the next; medians over repetitions with [min-max].
// The data file is written once into DIR (--data, default TMPDIR/uffd-bench-residency) with
// non-zero bytes (page i is all 1 + (7i + 3) mod 255) and reused by later runs; it is read through
// before the timed runs, and how much of it is in the page cache (mincore) is said before each
// scan. Tables on stdout, progress on stderr, JSON in DIR/userfaultfd-bench-residency.json
// (DIR: --out, else the current folder; or FILE with --json).
import { spawn, spawnSync } from 'node:child_process'
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { median } from './common.mjs'
import { childRandom, childScan, pageByte, regionRssKiB, statusKiB } from './residency-child.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
const SELF = fileURLToPath(import.meta.url)
const MiB = 2 ** 20
const PAGE = 4096
/** The byte of every position of page `i` of the data file (residency-scan.c computes the same). */
const log = (text) => process.stderr.write(`${text}\n`)

let args
try {
  args = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      size: { type: 'string' },
      limit: { type: 'string' },
      reps: { type: 'string' },
      out: { type: 'string' },
      json: { type: 'string' },
      data: { type: 'string' },
      scenario: { type: 'string', multiple: true },
      'reads-per-hot-page': { type: 'string' },
      child: { type: 'string' },
    },
    strict: true,
  }).values
} catch (error) {
  log(
    `${error.message}\nusage: node bench/residency.mjs [--quick] [--size 4G] [--limit 256M] [--reps N] [--out DIR] [--json FILE] [--data DIR] [--scenario scan|random]... [--reads-per-hot-page N]`,
  )
  process.exit(2)
}

/** Bytes from `4G`, `512M`, `512` (MiB). */
function sizeOf(text, name) {
  const m = /^(\d+(?:\.\d+)?)([GgMmKk]?)i?[Bb]?$/.exec(text)
  if (!m) {
    log(`--${name} takes a size such as 4G, 512M or 512 (MiB), not ${text}`)
    process.exit(2)
  }
  const unit = { g: 1024 * MiB, m: MiB, k: 1024, '': MiB }[m[2].toLowerCase()]
  return Math.round((Number(m[1]) * unit) / PAGE) * PAGE
}

// ---- a child: one measurement, one JSON line on stdout -------------------------------------------------

if (args.child !== undefined) {
  const spec = JSON.parse(args.child)
  const result = await (spec.kind === 'scan' ? childScan(spec) : childRandom(spec))
  process.stdout.write(`${JSON.stringify(result)}\n`)
  process.exit(0)
}

// ---- the parent -----------------------------------------------------------------------------------------

const quick = args.quick
const SIZE = args.size ? sizeOf(args.size, 'size') : (quick ? 512 : 4096) * MiB
const LIMIT = args.limit ? sizeOf(args.limit, 'limit') : (quick ? 64 : 256) * MiB
const REPS = Number(args.reps ?? (quick ? 1 : 3))
const OUT = resolve(process.cwd(), args.out ?? '.')
const DATA = resolve(args.data ?? join(tmpdir(), 'uffd-bench-residency'))
const READAHEAD = { pages: 16, adaptive: true, maxPages: 512 }
const HOT_SHARE = 0.6
const WANT = args.scenario ?? ['scan', 'random']
for (const name of WANT) {
  if (!['scan', 'random'].includes(name)) {
    log(`unknown scenario ${name}: scan or random`)
    process.exit(2)
  }
}
if (LIMIT >= SIZE) {
  log(`--limit (${LIMIT / MiB} MiB) must be below --size (${SIZE / MiB} MiB)`)
  process.exit(2)
}
const started = new Date()
const work = mkdtempSync(join(tmpdir(), 'uffd-bench-residency-'))
process.on('exit', () => rmSync(work, { recursive: true, force: true }))
for (const [signal, status] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
]) {
  process.on(signal, () => process.exit(status))
}
const skipped = []
const skip = (text) => {
  skipped.push(text)
  log(`skipped: ${text}`)
}

// The C reference.
const CC = process.env.CC ?? 'cc'
const helper = join(work, 'residency-scan')
const built = spawnSync(CC, ['-O2', '-o', helper, join(HERE, 'residency-scan.c')], { encoding: 'utf8' })
const hasC = built.status === 0
if (!hasC) skip(`mmap reference: ${CC} could not build bench/residency-scan.c: ${built.error?.message ?? built.stderr.trim()}`)

// The data file: written once, reused.
mkdirSync(DATA, { recursive: true })
const FILE = join(DATA, `data-${SIZE / MiB}MiB.bin`)
function fileIsRight() {
  if (!existsSync(FILE) || statSync(FILE).size !== SIZE) return false
  const fd = openSync(FILE, 'r')
  const one = Buffer.alloc(1)
  try {
    for (const p of [0, 1, 255, SIZE / PAGE - 1, Math.floor(SIZE / PAGE / 3)]) {
      readSync(fd, one, 0, 1, p * PAGE + (p % PAGE))
      if (one[0] !== pageByte(p)) return false
    }
  } finally {
    closeSync(fd)
  }
  return true
}
if (fileIsRight()) log(`data file: ${FILE} (${SIZE / MiB} MiB), reused`)
else {
  log(`data file: writing ${FILE} (${SIZE / MiB} MiB)...`)
  const partial = `${FILE}.partial`
  const chunk = Buffer.alloc(4 * MiB)
  const fd = openSync(partial, 'w')
  for (let at = 0; at < SIZE; at += chunk.length) {
    for (let p = 0; p < chunk.length / PAGE; p++) chunk.fill(pageByte(at / PAGE + p), p * PAGE, (p + 1) * PAGE)
    writeSync(fd, chunk, 0, Math.min(chunk.length, SIZE - at), at)
  }
  closeSync(fd)
  renameSync(partial, FILE)
}

/** Reads the file through once (into the page cache). */
function readThrough() {
  const chunk = Buffer.alloc(4 * MiB)
  const fd = openSync(FILE, 'r')
  for (let at = 0; at < SIZE; at += chunk.length) readSync(fd, chunk, 0, chunk.length, at)
  closeSync(fd)
}
/** The share of the file's pages in the page cache (mincore), or undefined without the C helper. */
function cachedShare() {
  if (!hasC) return undefined
  const r = spawnSync(helper, ['cached', FILE], { encoding: 'utf8' })
  if (r.status !== 0) return undefined
  const { pages, cached } = JSON.parse(r.stdout)
  return cached / pages
}
const t = performance.now()
readThrough()
log(`data file read through in ${((performance.now() - t) / 1000).toFixed(1)} s`)
const cachedAtStart = cachedShare()
log(
  `page cache: ${cachedAtStart === undefined ? 'not checked (no C helper)' : `${(cachedAtStart * 100).toFixed(1)} % of the file`} before timing`,
)

/**
 * Runs one measurement in a child: a JS child (this script with --child) or the C helper. While it
 * runs (after its first line, the region's address), samples the region's Rss and the process's
 * VmRSS every 50 ms. Resolves to its result, with the samples' peaks.
 */
function runChild(argv, { timeoutMs, wantsGo }) {
  return new Promise((done) => {
    const proc = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] })
    let stderr = ''
    proc.stderr.on('data', (chunk) => {
      stderr += chunk
    })
    const lines = createInterface({ input: proc.stdout })
    let address
    let sampler
    let ticks = 0
    let peakRegionKiB = 0
    let peakVmRssKiB = 0
    let samples = 0
    let result
    // VmRSS (a counter) every 10 ms; the region's Rss (a walk of its page tables) every 100 ms.
    const sample = () => {
      try {
        const rss = statusKiB('VmRSS', proc.pid)
        if (rss !== undefined) peakVmRssKiB = Math.max(peakVmRssKiB, rss)
        if (ticks++ % 10 === 0) {
          const region = regionRssKiB(address, proc.pid)
          if (region !== undefined) peakRegionKiB = Math.max(peakRegionKiB, region)
        }
        samples++
      } catch {
        // The child is gone.
      }
    }
    lines.on('line', (line) => {
      const msg = JSON.parse(line)
      if (msg.address !== undefined && address === undefined) {
        address = msg.address
        sampler = setInterval(sample, 10)
        if (wantsGo) proc.stdin.write('go\n')
      } else result = msg
    })
    const timer = setTimeout(() => {
      log(`a child ran past ${timeoutMs / 1000} s: killing it (pid ${proc.pid})`)
      proc.kill('SIGKILL')
    }, timeoutMs)
    proc.on('close', (code, signal) => {
      clearTimeout(timer)
      clearInterval(sampler)
      proc.stdin.destroy()
      if (!result || code !== 0) {
        done({ failed: `exit ${code ?? signal}: ${stderr.trim().slice(0, 600)}` })
        return
      }
      done({ ...result, sampledPeakRegionKiB: address ? peakRegionKiB : undefined, sampledPeakVmRssKiB: peakVmRssKiB, samples })
    })
  })
}

const jsChild = (spec) => [process.execPath, SELF, '--child', JSON.stringify(spec)]
const timeoutMs = 120_000 + (SIZE / MiB) * 200 // 2 min + 0.2 s per MiB: far beyond any scan seen here

// ---- 1. scan -------------------------------------------------------------------------------------

const SCAN = [
  { id: 'limited', label: `Source.file, adaptive readahead, maxResident ${LIMIT / MiB} MiB`, js: { limit: LIMIT } },
  { id: 'unbounded', label: 'Source.file, adaptive readahead, no limit', js: { limit: null } },
  ...(hasC ? [{ id: 'mmap', label: 'C: mmap(2) of the file (the kernel page cache)', c: true }] : []),
  // The same two with both CPUs also busy (two spinning processes, niceness 0, for the run only):
  // the evictor then competes for a CPU with the reader, the fault loop and the spinners.
  { id: 'limited-busy', label: `the limited scan, 2 CPUs kept busy by 2 spinning processes`, js: { limit: LIMIT }, busy: 2 },
  { id: 'unbounded-busy', label: 'the unbounded scan, 2 CPUs kept busy', js: { limit: null }, busy: 2 },
]
const spinners = new Set()
process.on('exit', () => {
  for (const spinner of spinners) spinner.kill('SIGKILL')
})
/** Starts `count` processes that spin; returns a function that stops them. */
function spin(count) {
  const started = Array.from({ length: count }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }))
  for (const spinner of started) spinners.add(spinner)
  return () =>
    Promise.all(
      started.map(
        (spinner) =>
          new Promise((done) => {
            spinners.delete(spinner)
            spinner.on('close', done)
            spinner.kill('SIGKILL')
          }),
      ),
    )
}
const scanRuns = Object.fromEntries(SCAN.map((c) => [c.id, []]))
const cacheBeforeScan = []
for (let rep = 0; WANT.includes('scan') && rep < REPS; rep++) {
  for (let k = 0; k < SCAN.length; k++) {
    const c = SCAN[(k + rep) % SCAN.length]
    const cached = cachedShare()
    cacheBeforeScan.push(cached)
    const argv = c.c ? [helper, 'scan', FILE] : jsChild({ kind: 'scan', file: FILE, size: SIZE, readahead: READAHEAD, ...c.js })
    const stop = c.busy ? spin(c.busy) : undefined
    if (stop) await new Promise((done) => setTimeout(done, 200))
    const r = await runChild(argv, { timeoutMs, wantsGo: !c.c })
    await stop?.()
    scanRuns[c.id].push(r)
    log(
      r.failed
        ? `scan rep ${rep + 1}/${REPS} ${c.id}: FAILED ${r.failed}`
        : `scan rep ${rep + 1}/${REPS} ${c.id}: ${((SIZE / MiB / r.ms) * 1000).toFixed(0)} MiB/s, peak RSS +${((Math.max(r.hwmKiB, r.sampledPeakVmRssKiB) - r.rssBeforeKiB) / 1024).toFixed(0)} MiB ` +
            `(VmHWM +${((r.hwmKiB - r.rssBeforeKiB) / 1024).toFixed(0)}, VmRSS sampled +${((r.sampledPeakVmRssKiB - r.rssBeforeKiB) / 1024).toFixed(0)}), ` +
            `region Rss peak ${(r.sampledPeakRegionKiB / 1024).toFixed(0)} MiB (sampled), wrong bytes ${r.bad}${r.badAgain ? ` + ${r.badAgain} on the second read` : ''}` +
            `${cached === undefined ? '' : `, page cache ${(cached * 100).toFixed(1)} % before`}`,
    )
  }
}

// ---- 2. random reads over a hot set -----------------------------------------------------------------------

const HOT = Math.floor((LIMIT * HOT_SHARE) / PAGE) * PAGE
// Random reads after the warm-up: 8 per hot page by default (more, to see a policy after it has learnt).
const READS = (HOT / PAGE) * Number(args['reads-per-hot-page'] ?? 8)
const RANDOM = [
  { id: 'hot', label: 'hot set only, readahead 1 page (default), limit', spec: { limit: LIMIT, coldShare: 0 } },
  { id: 'hot-unbounded', label: 'hot set only, readahead 1 page, no limit', spec: { limit: null, coldShare: 0 } },
  {
    id: 'hot-adaptive',
    label: 'hot set only, adaptive readahead (16, max 512), limit',
    spec: { limit: LIMIT, coldShare: 0, readahead: READAHEAD },
  },
  { id: 'hot-cold', label: '90 % hot set, 10 % cold pages anywhere, readahead 1 page, limit', spec: { limit: LIMIT, coldShare: 0.1 } },
  { id: 'hot-cold-unbounded', label: 'the same, no limit', spec: { limit: null, coldShare: 0.1 } },
]
const randomRuns = Object.fromEntries(RANDOM.map((c) => [c.id, []]))
for (let rep = 0; WANT.includes('random') && rep < REPS; rep++) {
  for (let k = 0; k < RANDOM.length; k++) {
    const c = RANDOM[(k + rep) % RANDOM.length]
    const spec = { kind: 'random', file: FILE, size: SIZE, hotBytes: HOT, reads: READS, seed: 12345 + rep, ...c.spec }
    const r = await runChild(jsChild(spec), { timeoutMs, wantsGo: false })
    randomRuns[c.id].push(r)
    log(
      r.failed
        ? `random rep ${rep + 1}/${REPS} ${c.id}: FAILED ${r.failed}`
        : `random rep ${rep + 1}/${REPS} ${c.id}: ${r.reads} reads, ${r.refaults} re-faults, ${r.missingFaults} faults, ` +
            `${r.warmupEvictions} evictions in the warm-up, ${r.evictions} after, wrong bytes ${r.bad}`,
    )
  }
}

// ---- 3 and 4: benches of their own ----------------------------------------------------------------------

skip('write-back: measured by bench/write-back.mjs (random and in-order writes through a writable file source, vs pwrite)')
skip('object-store scan with maxResident: measured by bench/residency-store.mjs (an object in SeaweedFS, with and without a limit)')

// ---- summaries --------------------------------------------------------------------------------------------

const ok = (runs) => runs.filter((r) => !r.failed)
const fmt = (x, digits = 0) => (Number.isFinite(x) ? x.toFixed(digits) : '-')
const spread = (xs, digits = 0) => {
  const v = xs.filter(Number.isFinite)
  return v.length ? `${fmt(Math.min(...v), digits)} - ${fmt(Math.max(...v), digits)}` : '-'
}
function table(header, rows) {
  const all = [header, ...rows]
  const widths = header.map((_, i) => Math.max(...all.map((row) => String(row[i]).length)))
  const line = (row) => `| ${row.map((cell, i) => String(cell).padEnd(widths[i])).join(' | ')} |`
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n')
}

const scanRows = SCAN.map((c) => {
  const runs = ok(scanRuns[c.id])
  const mibs = runs.map((r) => (SIZE / MiB / r.ms) * 1000)
  // The peak: VmHWM, or the highest VmRSS sampled if higher (the kernel updates VmHWM lazily, at
  // unmaps and zaps, and a peak between two of them can be missed).
  const growth = runs.map((r) => (Math.max(r.hwmKiB, r.sampledPeakVmRssKiB ?? 0) - r.rssBeforeKiB) / 1024)
  const region = runs.map((r) => r.sampledPeakRegionKiB / 1024)
  return {
    id: c.id,
    label: c.label,
    runs: runs.length,
    failed: scanRuns[c.id].length - runs.length,
    mibs: median(mibs),
    mibsRange: spread(mibs),
    growthMiB: median(growth),
    growthMax: Math.max(...growth),
    regionPeakMiB: median(region),
    regionPeakMax: Math.max(...region),
    regionEndMiB: median(runs.map((r) => r.regionRssEndKiB / 1024)),
    bad: runs.reduce((s, r) => s + r.bad + (r.badAgain ?? 0), 0),
    evictions: median(runs.map((r) => r.residency?.evictions)),
    batches: median(runs.map((r) => r.residency?.evictionBatches)),
    refaults: median(runs.map((r) => r.residency?.refaults)),
    faults: median(runs.map((r) => r.faults)),
    errors: runs.reduce((s, r) => s + (r.errorCount ?? 0), 0),
  }
})
const byId = Object.fromEntries(scanRows.map((row) => [row.id, row]))
const unbounded = byId.unbounded
const unboundedBusy = byId['unbounded-busy']
const out = []
const cachedMin = Math.min(...cacheBeforeScan.filter(Number.isFinite))
if (WANT.includes('scan')) {
  out.push(`### scan: one byte per page of a ${SIZE / MiB} MiB file, in order, main thread; ${REPS} repetition(s), medians [min - max]`)
  out.push('')
  out.push(
    `The file was in the page cache before every scan: ${Number.isFinite(cachedMin) ? `at least ${(cachedMin * 100).toFixed(1)} % of its pages (mincore)` : 'read through once (not checked: no C helper)'}.`,
  )
  out.push('')
  out.push(
    table(
      [
        'contender',
        'MiB/s',
        'min - max',
        'vs unbounded',
        'peak RSS growth, median / max',
        'region Rss peak (sampled), median / max',
        'region Rss at end',
        'evictions (batches)',
        're-faults',
        'wrong bytes',
      ],
      scanRows.map((row) => [
        row.label,
        fmt(row.mibs),
        row.mibsRange,
        ((base) => (base?.mibs ? `${(row.mibs / base.mibs).toFixed(2)}x` : '-'))(row.id.endsWith('-busy') ? unboundedBusy : unbounded),
        `${fmt(row.growthMiB)} / ${fmt(row.growthMax)} MiB (${(row.growthMax / (LIMIT / MiB)).toFixed(2)}x limit)`,
        `${fmt(row.regionPeakMiB)} / ${fmt(row.regionPeakMax)} MiB`,
        `${fmt(row.regionEndMiB)} MiB`,
        row.evictions === undefined || Number.isNaN(row.evictions) ? '-' : `${row.evictions} (${row.batches})`,
        Number.isFinite(row.refaults) ? row.refaults : '-',
        `${row.bad}${row.failed ? `; ${row.failed} run(s) FAILED` : ''}${row.errors ? `; ${row.errors} 'error' events` : ''}`,
      ]),
    ),
  )
}

const randomRows = RANDOM.map((c) => {
  const runs = ok(randomRuns[c.id])
  const share = runs.map((r) => 1 - r.refaults / r.reads)
  const hotShare = runs.map((r) => 1 - r.refaults / (r.reads - r.coldReads))
  const secondHalf = runs.map((r) => 1 - r.secondHalfRefaults / r.secondHalfReads)
  const nsPerRead = runs.map((r) => (r.ms * 1e6) / r.reads)
  return {
    id: c.id,
    label: c.label,
    runs: runs.length,
    failed: randomRuns[c.id].length - runs.length,
    share: median(share),
    shareRange: spread(
      share.map((x) => x * 100),
      2,
    ),
    hotShare: median(hotShare),
    secondHalf: median(secondHalf),
    refaults: median(runs.map((r) => r.refaults)),
    faults: median(runs.map((r) => r.missingFaults)),
    warmupEvictions: median(runs.map((r) => r.warmupEvictions)),
    evictions: median(runs.map((r) => r.evictions)),
    nsPerRead: median(nsPerRead),
    regionEndMiB: median(runs.map((r) => r.regionRssEndKiB / 1024)),
    bad: runs.reduce((s, r) => s + r.bad, 0),
    errors: runs.reduce((s, r) => s + (r.errorCount ?? 0), 0),
  }
})
if (WANT.includes('random')) {
  out.push('')
  out.push(
    `### random reads: a hot set of ${HOT / MiB} MiB (${HOT_SHARE * 100} % of the ${LIMIT / MiB} MiB limit), random pages of the ${SIZE / MiB} MiB file; a warm-up pass, then ${READS} random reads; ${REPS} repetition(s), medians`,
  )
  out.push('')
  out.push(
    table(
      [
        'contender',
        'served without a re-fault',
        'min - max %',
        'of hot reads',
        'second half',
        're-faults',
        'faults after warm-up',
        'evictions: warm-up / after',
        'ns per read',
        'region Rss at end',
        'wrong bytes',
      ],
      randomRows.map((row) => [
        row.label,
        `${fmt(row.share * 100, 2)} %`,
        row.shareRange,
        `${fmt(row.hotShare * 100, 2)} %`,
        `${fmt(row.secondHalf * 100, 2)} %`,
        row.refaults,
        row.faults,
        `${row.warmupEvictions} / ${row.evictions}`,
        fmt(row.nsPerRead),
        `${fmt(row.regionEndMiB)} MiB`,
        `${row.bad}${row.failed ? `; ${row.failed} run(s) FAILED` : ''}${row.errors ? `; ${row.errors} 'error' events` : ''}`,
      ]),
    ),
  )
}

const limited = byId.limited
const limitedBusy = byId['limited-busy']
const hotRow = randomRows.find((row) => row.id === 'hot')
const goals = [
  {
    goal: 'scan throughput with the limit',
    target: '>= 0.8x the unbounded scan',
    measured: limited?.mibs && unbounded?.mibs ? limited.mibs / unbounded.mibs : Number.NaN,
    pass: (x) => x >= 0.8,
    detail: `${fmt(limited?.mibs)} vs ${fmt(unbounded?.mibs)} MiB/s (mmap: ${fmt(byId.mmap?.mibs)})`,
  },
  {
    goal: 'peak RSS growth of the limited scan',
    target: `<= 1.1x the limit (${((LIMIT / MiB) * 1.1).toFixed(0)} MiB)`,
    measured: limited ? limited.growthMax / (LIMIT / MiB) : Number.NaN,
    pass: (x) => x <= 1.1,
    detail: `max(VmHWM, VmRSS sampled every 10 ms) - VmRSS before: ${fmt(limited?.growthMax)} MiB at most (median ${fmt(limited?.growthMiB)}); the region's Rss peak ${fmt(limited?.regionPeakMax)} MiB sampled`,
  },
  {
    goal: 'the same, 2 CPUs kept busy: throughput',
    target: '>= 0.8x the unbounded scan, also busy',
    measured: limitedBusy?.mibs && unboundedBusy?.mibs ? limitedBusy.mibs / unboundedBusy.mibs : Number.NaN,
    pass: (x) => x >= 0.8,
    detail: `${fmt(limitedBusy?.mibs)} vs ${fmt(unboundedBusy?.mibs)} MiB/s`,
  },
  {
    goal: 'the same, 2 CPUs kept busy: peak RSS growth',
    target: `<= 1.1x the limit (${((LIMIT / MiB) * 1.1).toFixed(0)} MiB)`,
    measured: limitedBusy ? limitedBusy.growthMax / (LIMIT / MiB) : Number.NaN,
    pass: (x) => x <= 1.1,
    detail: `${fmt(limitedBusy?.growthMax)} MiB at most (median ${fmt(limitedBusy?.growthMiB)}); the region's Rss peak ${fmt(limitedBusy?.regionPeakMax)} MiB sampled`,
  },
  {
    goal: 'random reads over a hot set that fits',
    target: '>= 95 % served without a re-fault after warm-up',
    measured: hotRow ? hotRow.share * 100 : Number.NaN,
    pass: (x) => x >= 95,
    detail: `${hotRow?.refaults} re-faults in ${READS} reads`,
  },
]
out.push('')
out.push('### Goals')
out.push('')
out.push(
  table(
    ['goal', 'target', 'measured', 'verdict', 'detail'],
    goals
      .filter((g) => Number.isFinite(g.measured))
      .map((g) => [
        g.goal,
        g.target,
        Number.isFinite(g.measured) ? (g.goal.startsWith('random') ? `${g.measured.toFixed(2)} %` : `${g.measured.toFixed(2)}x`) : '-',
        Number.isFinite(g.measured) ? (g.pass(g.measured) ? 'met' : 'NOT met') : '-',
        g.detail,
      ]),
  ),
)
out.push('')
for (const line of skipped) out.push(`skipped: ${line}`)
const command = `node bench/residency.mjs${quick ? ' --quick' : ''}${args.size ? ` --size ${args.size}` : ''}${args.limit ? ` --limit ${args.limit}` : ''}${args.reps ? ` --reps ${args.reps}` : ''}${(args.scenario ?? []).map((name) => ` --scenario ${name}`).join('')}${args['reads-per-hot-page'] ? ` --reads-per-hot-page ${args['reads-per-hot-page']}` : ''}`
out.push('')
out.push(`Reproduce: ${command}`)
console.log(out.join('\n'))

const json = {
  started: started.toISOString(),
  node: process.version,
  size: SIZE,
  limit: LIMIT,
  reps: REPS,
  readahead: READAHEAD,
  file: FILE,
  cachedAtStart,
  cacheBeforeScan,
  scan: { rows: scanRows, runs: scanRuns },
  random: { hotBytes: HOT, reads: READS, rows: randomRows, runs: randomRuns },
  goals: goals.map(({ pass, ...g }) => ({ ...g, met: Number.isFinite(g.measured) ? pass(g.measured) : undefined })),
  skipped,
}
const jsonPath = args.json ? resolve(args.json) : join(OUT, 'userfaultfd-bench-residency.json')
mkdirSync(dirname(jsonPath), { recursive: true })
writeFileSync(jsonPath, JSON.stringify(json, null, 1))
log(`results: ${jsonPath}`)
