#!/usr/bin/env node
// The pushed-snapshot bench (issue 19): which chunk size and zstd level serve a restore best.
//
//   WEED=/path/to/weed node bench/snapshot-push.mjs [--quick] [--reps N] [--size MiB] [--json FILE]
//     [--chunk-sizes 256K,1M,4M] [--levels 1,3,9] [--frame-sizes 16K]
//
// A realistic memory image: the writable memory of a running Node.js process that built a heap
// (objects, strings, arrays, a Map), read from /proc/PID/mem (needs root or ptrace rights), cut to
// --size MiB. SeaweedFS (`weed`, from WEED or a checkout's .tools/venv/bin/weed) on loopback ports.
// For each chunk size, level and frame size: the push (time, throughput, compression ratio), then, on fresh
// sources (no caches), a sequential scan of the mapped memory on the main thread and random reads
// of 1% of its pages, at +0 ms and through a TCP proxy adding 10 ms to every request; next to the
// same reads of the image stored as a plain object with the same chunk size, and the same scan of
// the local file (Source.file, adaptive readahead up to 4 MiB). Medians of --reps runs, alternating configuration by configuration.
// Then a sibling image (1% of its pages changed) pushed on top: what it uploads.
import { spawn } from 'node:child_process'
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { pushSnapshot, Region, Source, Userfaultfd } from 'userfaultfd'
import { startSeaweed } from '../scripts/seaweed.mjs'
import { median } from './common.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
const MiB = 1024 * 1024
const PAGE = 4096
const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    reps: { type: 'string' },
    size: { type: 'string' },
    json: { type: 'string' },
    'chunk-sizes': { type: 'string' },
    levels: { type: 'string' },
    'frame-sizes': { type: 'string' },
  },
})
const sizes = (text) => text.split(',').map((s) => Number.parseInt(s, 10) * { K: 1024, M: MiB }[s.at(-1)])
const reps = Number(args.reps ?? (args.quick ? 1 : 3))
const SIZE = Number(args.size ?? (args.quick ? 64 : 256)) * MiB
const CHUNKS = args['chunk-sizes'] ? sizes(args['chunk-sizes']) : args.quick ? [MiB, 4 * MiB] : [256 * 1024, MiB, 4 * MiB]
const LEVELS = args.levels ? args.levels.split(',').map(Number) : args.quick ? [1, 3] : [1, 3, 9]
const FRAMES = args['frame-sizes'] ? sizes(args['frame-sizes']) : [16 * 1024]
const DELAYS = [0, 10]
const BUCKET = 'bench'
process.env.AWS_EC2_METADATA_DISABLED = 'true'
for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_ENDPOINT_URL', 'AWS_PROFILE'])
  delete process.env[name]
const log = (text) => process.stderr.write(`${text}\n`)

const weed = process.env.WEED ?? join(HERE, '..', '.tools', 'venv', 'bin', 'weed')
if (!existsSync(weed)) {
  log(`skipped: snapshot-push: no SeaweedFS \`weed\` at ${weed} (set WEED)`)
  process.exit(0)
}

const dir = mkdtempSync(join(tmpdir(), 'uffd-push-bench-'))
const stops = [() => rmSync(dir, { recursive: true, force: true })]
process.on('exit', () => {
  for (const stop of stops.splice(0).reverse()) stop()
})
for (const [signal, status] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
])
  process.on(signal, () => process.exit(status))

/** The writable memory of a Node.js process that built a heap, `size` bytes of it, in a file. */
async function processImage(size) {
  const script = `
    const keep = []
    const words = ['alpha', 'beta', 'gamma', 'delta', 'request', 'response', 'user', 'session', 'token', 'value']
    for (let i = 0; i < 400000; i++) {
      keep.push({ id: i, name: words[i % 10] + '-' + i, tags: [words[(i * 7) % 10], words[(i * 3) % 10]], score: Math.sin(i) * 1000, at: new Date(1.7e12 + i * 1000).toISOString() })
    }
    const map = new Map(keep.map((o) => [o.name, o]))
    const floats = new Float64Array(4 << 20).map((_, i) => Math.round(Math.cos(i) * 100) / 100)
    const text = JSON.stringify(keep.slice(0, 100000))
    globalThis.keep = [keep, map, floats, text]
    console.log('ready')
    setInterval(() => {}, 1000)`
  const child = spawn(process.execPath, ['--max-old-space-size=2048', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  stops.push(() => child.kill('SIGKILL'))
  await new Promise((resolve) => createInterface({ input: child.stdout }).once('line', resolve))
  const maps = readFileSync(`/proc/${child.pid}/maps`, 'utf8').split('\n')
  const mem = openSync(`/proc/${child.pid}/mem`, 'r')
  const out = Buffer.alloc(size)
  let at = 0
  for (const line of maps) {
    const [range, perms, , , inode, path] = line.split(/\s+/)
    if (!range || !perms?.startsWith('rw') || (inode !== '0' && inode !== undefined) || path === '[vvar]') continue
    const [start, end] = range.split('-').map((x) => Number.parseInt(x, 16))
    for (let p = start; p < end && at < size; p += MiB) {
      const want = Math.min(MiB, end - p, size - at)
      try {
        at += readSync(mem, out, at, want, p)
      } catch {
        // A page that cannot be read (a guard page): skipped.
      }
    }
    if (at >= size) break
  }
  closeSync(mem)
  child.kill('SIGKILL')
  const file = join(dir, 'image.mem')
  writeFileSync(file, out.subarray(0, at))
  return { file, size: at }
}

/** A TCP proxy adding `delay` ms to every request (bench/object-proxy.mjs). */
async function proxy(target) {
  const child = spawn(process.execPath, [join(HERE, 'object-proxy.mjs'), target], { stdio: ['pipe', 'pipe', 'inherit'] })
  stops.push(() => child.kill('SIGKILL'))
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  const { port } = JSON.parse((await lines.next()).value)
  return {
    url: `http://127.0.0.1:${port}`,
    async delay(ms) {
      child.stdin.write(`delay ${ms}\n`)
      await lines.next()
    },
  }
}

/** Maps `source` and reads it: every page in order, or 1% of its pages at random. Milliseconds and bytes fetched after `opened`. */
function restore(source, size, pattern, opened) {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(Math.ceil(size / PAGE) * PAGE)
  // The local file reads ahead as the object sources do (up to 4 MiB per fault, adaptive).
  const readahead = source.kind === 'file' ? { readahead: { pages: 16, adaptive: true, maxPages: 1024 } } : {}
  uffd.register(region, { source, ...readahead })
  const view = new Uint8Array(region.buffer)
  let sum = 0
  const started = performance.now()
  if (pattern === 'scan') {
    for (let i = 0; i < size; i += PAGE) sum += view[i]
  } else {
    let state = 12345
    const pages = Math.floor(size / PAGE)
    for (let n = 0; n < pages / 100; n++) {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0
      sum += view[(state % pages) * PAGE]
    }
  }
  const ms = performance.now() - started
  // Less the manifest's GET, made when the source was opened.
  const fetched = (source.objectStats?.bytesFetched ?? 0) - opened
  uffd.close()
  region.close()
  return { ms, fetched, sum }
}

const { endpoint, stop } = await startSeaweed(weed, BUCKET)
stops.push(stop)
const px = await proxy(endpoint.slice('http://'.length))
log(`SeaweedFS at ${endpoint}; making a ${SIZE / MiB} MiB image of a Node.js process's memory`)
const image = await processImage(SIZE)
log(`image: ${(image.size / MiB).toFixed(0)} MiB`)
const store = (over = endpoint) => ({ endpoint: over, anonymous: true, env: {} })

// The plain object, once per chunk size (the object is the same; the source's chunk size differs).
const body = readFileSync(image.file)
const put = await fetch(`${endpoint}/${BUCKET}/plain.mem`, { method: 'PUT', body })
if (!put.ok) throw new Error(`PUT plain.mem: HTTP ${put.status}`)

const pushes = []
for (const chunkSize of CHUNKS) {
  for (const level of LEVELS)
    for (const frameSize of FRAMES) {
      if (frameSize > chunkSize) continue
      const key = `c${chunkSize}-l${level}-f${frameSize}/image.mem`
      const report = await pushSnapshot(image.file, `s3://${BUCKET}/${key}`, { ...store(), chunkSize, level, frameSize })
      pushes.push({ chunkSize, level, frameSize, key, report })
      log(
        `push chunk ${chunkSize / 1024} KiB level ${level} frame ${frameSize / 1024} KiB: ${report.ms.toFixed(0)} ms ` +
          `(${(report.bytesIn / MiB / (report.ms / 1000)).toFixed(0)} MiB/s), ratio ${(report.bytesData / report.bytesStored).toFixed(2)}x, ` +
          `${report.holes} holes of ${report.chunks}`,
      )
    }
}

const configs = [
  { name: 'local file', open: () => Source.file(image.file), delays: [0] },
  ...CHUNKS.map((chunkSize) => ({
    name: `plain object, ${chunkSize / 1024} KiB chunks`,
    open: (over) => Source.objectStore(`s3://${BUCKET}/plain.mem`, { ...store(over), chunkSize }),
    delays: DELAYS,
  })),
  ...pushes.map(({ chunkSize, level, frameSize, key }) => ({
    name: `pushed, ${chunkSize / 1024} KiB chunks, level ${level}, ${frameSize / 1024} KiB frames`,
    open: (over) => Source.objectStore(`s3://${BUCKET}/${key}`, store(over)),
    delays: DELAYS,
  })),
]
const results = new Map()
for (let rep = 0; rep < reps; rep++) {
  for (const delay of DELAYS) {
    await px.delay(delay)
    for (const config of configs) {
      if (!config.delays.includes(delay)) continue
      for (const pattern of ['scan', 'random']) {
        const source = await config.open(delay === 0 ? endpoint : px.url)
        const r = restore(source, image.size, pattern, source.objectStats?.bytesFetched ?? 0)
        const id = `${config.name}|${delay}|${pattern}`
        if (!results.has(id)) results.set(id, [])
        results.get(id).push(r)
      }
    }
  }
}
await px.delay(0)

const rows = []
for (const [id, runs] of results) {
  const [name, delay, pattern] = id.split('|')
  rows.push({
    name,
    delay: Number(delay),
    pattern,
    ms: median(runs.map((r) => r.ms)),
    fetchedMiB: median(runs.map((r) => r.fetched)) / MiB,
  })
}
const local = Object.fromEntries(rows.filter((r) => r.name === 'local file').map((r) => [r.pattern, r.ms]))
const touched = Math.floor(Math.floor(image.size / PAGE) / 100) * PAGE
log(`\n| source | +ms | scan ms (x local) | random 1% ms | random: MiB fetched (x ${(touched / MiB).toFixed(2)} MiB touched) |`)
log('| --- | --- | --- | --- | --- |')
for (const config of configs) {
  for (const delay of config.delays) {
    const scan = rows.find((r) => r.name === config.name && r.delay === delay && r.pattern === 'scan')
    const random = rows.find((r) => r.name === config.name && r.delay === delay && r.pattern === 'random')
    log(
      `| ${config.name} | ${delay} | ${scan.ms.toFixed(0)} (${(scan.ms / local.scan).toFixed(2)}x) | ${random.ms.toFixed(0)} | ${random.fetchedMiB.toFixed(2)} (${((random.fetchedMiB * MiB) / touched).toFixed(2)}x) |`,
    )
  }
}

// A sibling: 1% of the pages changed, pushed with the first as its base.
const sibling = Buffer.from(body)
const pages = Math.floor(image.size / PAGE)
let state = 777
for (let n = 0; n < pages / 100; n++) {
  state = (Math.imul(state, 1103515245) + 12345) >>> 0
  sibling[(state % pages) * PAGE + 100] ^= 0xff
}
const siblingFile = join(dir, 'sibling.mem')
writeFileSync(siblingFile, sibling)
// Since patches (manifest version 3) a sibling's chunks upload a few KB, less than its manifest
// (17 bytes a frame, not in bytesOut): both are given, each as a share of the first push's bytes.
const objectBytes = async (key) => {
  const got = await fetch(`${endpoint}/${BUCKET}/${key}`, { method: 'HEAD' })
  return got.ok ? Number(got.headers.get('content-length')) : Number.NaN
}
const pct = (bytes, of) => `${((100 * bytes) / of).toFixed(bytes / of < 0.01 ? 3 : 1)}%`
log(
  '\n| chunk | sibling (1% of pages changed, pushed on the first): chunks uploaded | chunk bytes uploaded / first push | its manifest / first push |',
)
log('| --- | --- | --- | --- |')
const siblings = []
for (const { chunkSize, level, frameSize, key, report } of pushes.filter((p) => p.level === LEVELS.at(-1) || p.level === 3)) {
  const next = await pushSnapshot(siblingFile, `s3://${BUCKET}/${key}.sibling`, {
    ...store(),
    chunkSize,
    level,
    frameSize,
    base: `s3://${BUCKET}/${key}`,
  })
  const manifestBytes = await objectBytes(`${key}.sibling`)
  const baseManifestBytes = await objectBytes(key)
  siblings.push({ chunkSize, level, frameSize, report: next, firstBytesOut: report.bytesOut, manifestBytes, baseManifestBytes })
  log(
    `| ${chunkSize / 1024} KiB, ${frameSize / 1024} KiB frames | ${next.uploaded} of ${next.chunks} (${next.deltas} as deltas) | ${next.bytesOut} / ${report.bytesOut} B = ${pct(next.bytesOut, report.bytesOut)} | ${manifestBytes} B = ${pct(manifestBytes, report.bytesOut)} (the first's ${baseManifestBytes} B) |`,
  )
}
const out = { size: image.size, touched, reps, pushes, rows, siblings }
if (args.json) writeFileSync(args.json, JSON.stringify(out, null, 2))
process.exit(0)
