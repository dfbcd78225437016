// Object store: a model file lazily mapped from object storage. Its pages are fetched in 4 MiB
// chunks, many at once, by native code when they are first touched: no JavaScript runs per fault,
// so the main thread itself reads the memory.
//
// With no URL the example makes its own store: SeaweedFS (a distributed object store with an S3
// gateway: `weed` from .tools/venv, which .ci/run installs) on loopback ports, or, with
// --store http or without weed, a plain HTTP server of Range requests. It uploads a generated
// "model", maps it, reads its header (the time to first byte), touches a few random "layers", then
// reads it all with a progress line, and checks every byte.
//
// Usage: node examples/object-store/main.mjs [URL] [--endpoint URL] [--anonymous] [--mib N] [--small] [--store seaweed|http] [--max-resident-mib N]
//   URL         s3://bucket/key or https://host/path to map instead (credentials from AWS_* or --anonymous)
//   --mib N     size of the generated model in MiB (default 256; --small: 32)
//   --max-resident-mib N  keep at most N MiB of the mapping resident (at least 6: a fault maps a 4 MiB
//               chunk): an object larger than the memory given is read through it, pages dropped as
//               the read goes on and fetched again (from the cache, else the store) if touched again
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { startSeaweed } from '../../scripts/seaweed.mjs'
import { integerFlag } from '../flags.mjs'

const MiB = 1024 * 1024
const here = dirname(fileURLToPath(import.meta.url))
const weed = join(here, '..', '..', '.tools', 'venv', 'bin', 'weed')
const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    endpoint: { type: 'string' },
    anonymous: { type: 'boolean', default: false },
    mib: { type: 'string' },
    small: { type: 'boolean', default: false },
    store: { type: 'string', default: existsSync(weed) ? 'seaweed' : 'http' },
    'max-resident-mib': { type: 'string' },
  },
})
process.env.AWS_EC2_METADATA_DISABLED = 'true'

// Word k of the generated model is a hash of k: a page from the wrong place cannot pass the check.
function wordOf(k) {
  let x = Math.imul(k ^ 0x2545f491, 0x9e3779b1)
  x ^= x >>> 15
  x = Math.imul(x, 0x85ebca77)
  x ^= x >>> 13
  return x >>> 0
}

const stops = []
// The store is a child process: it must not outlive the example, however the example ends.
const stopAll = () => {
  for (const stop of stops.splice(0)) stop()
}
process.on('exit', stopAll)
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    stopAll()
    process.exit(1)
  })
}
let url = positionals[0]
let options = { endpoint: flags.endpoint, anonymous: flags.anonymous || undefined }
let expected
if (url === undefined) {
  const size = integerFlag('mib', flags.mib ?? (flags.small ? '32' : '256'), 1) * MiB + 1000
  const words = new Uint32Array(Math.ceil(size / 4))
  for (let k = 0; k < words.length; k++) words[k] = wordOf(k)
  expected = new Uint8Array(words.buffer, 0, size)
  ;({ url, options } = flags.store === 'seaweed' ? await seaweed(expected) : await httpServer(expected))
}

async function seaweed(bytes) {
  const t0 = performance.now()
  const { endpoint, stop } = await startSeaweed(weed, 'models')
  stops.push(stop)
  const put = await fetch(`${endpoint}/models/model.bin`, { method: 'PUT', body: bytes })
  if (!put.ok) throw new Error(`upload failed: HTTP ${put.status}`)
  console.log(
    `SeaweedFS on ${endpoint} (started in ${(performance.now() - t0).toFixed(0)} ms); uploaded s3://models/model.bin, ${bytes.length} bytes`,
  )
  return { url: 's3://models/model.bin', options: { endpoint, anonymous: true } }
}

async function httpServer(bytes) {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-example-http-'))
  writeFileSync(join(dir, 'model.bin'), bytes)
  const child = spawn(process.execPath, [join(here, 'server.mjs'), join(dir, 'model.bin')], { stdio: ['pipe', 'pipe', 'inherit'] })
  stops.push(() => {
    child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  const line = await new Promise((resolve) => createInterface({ input: child.stdout }).once('line', resolve))
  const { port } = JSON.parse(line)
  console.log(`HTTP Range server on 127.0.0.1:${port} serving /model.bin, ${bytes.length} bytes`)
  return { url: `http://127.0.0.1:${port}/model.bin`, options: {} }
}

const errors = []
const source = await Source.objectStore(url, options)
const size = source.objectStats.size
const uffd = new Userfaultfd()
uffd.on('error', (error) => {
  errors.push(error)
  console.error(`error event: ${error.code}: ${error.message}`)
})
const region = Region.anonymous(size)
const limit = flags['max-resident-mib'] === undefined ? undefined : integerFlag('max-resident-mib', flags['max-resident-mib'], 6) * MiB
uffd.register(region, { source, ...(limit ? { maxResident: limit } : {}) })
console.log(
  `mapped ${url} (${size} bytes, ETag ${source.objectStats.etag}) lazily, in 4 MiB chunks, 16 requests in flight${limit ? `, at most ${limit / MiB} MiB resident` : ''}`,
)
let peakResident = 0

const memory = new Uint8Array(region.buffer)
let mismatches = 0
function check(at, length) {
  if (!expected) return
  for (let i = at; i < at + length; i++) if (memory[i] !== (i < expected.length ? expected[i] : 0)) mismatches++
}
const tty = process.stdout.isTTY === true
function progress(label, done, final = false) {
  const s = source.objectStats
  const resident = uffd.stats.residency.residentBytes
  peakResident = Math.max(peakResident, resident)
  const held = limit ? `, ${(resident / MiB).toFixed(0)} MiB resident` : ''
  const line = `${label.padEnd(10)} ${(done / MiB).toFixed(0).padStart(5)} / ${(size / MiB).toFixed(0)} MiB read, ${(s.bytesFetched / MiB).toFixed(1)} MiB fetched in ${s.requests} requests, ${uffd.stats.faults.missing} faults${held}`
  if (tty) process.stdout.write(`\r${line}${final ? '\n' : ''}`)
  else if (final || done % (64 * MiB) === 0) console.log(line)
}

// 1. The header: the first byte costs one range request.
let t = performance.now()
check(0, 4096)
console.log(`header:    first page in ${(performance.now() - t).toFixed(1)} ms`)

// 2. A few random "layers": only what is touched is fetched.
t = performance.now()
let state = 0x9e3779b9
for (let n = 0; n < 16; n++) {
  state = (Math.imul(state, 1664525) + 1013904223) >>> 0
  const at = (state % Math.floor(size / 4096)) * 4096
  check(at, 64)
}
progress('random', 0, true)

// 3. Everything, in order, with readahead by whole chunks.
t = performance.now()
for (let at = 0; at < size; at += MiB) {
  const length = Math.min(MiB, size - at)
  check(at, length)
  progress('scan', at + length, at + length >= size)
}
const ms = performance.now() - t
console.log(`scan:      ${(size / MiB).toFixed(0)} MiB in ${ms.toFixed(0)} ms = ${(size / MiB / (ms / 1000)).toFixed(0)} MiB/s`)
const s = source.objectStats
console.log(
  `fetched:   ${(s.bytesFetched / MiB).toFixed(1)} MiB in ${s.requests} requests (${s.retries} retries), for a ${(size / MiB).toFixed(1)} MiB object`,
)
console.log(
  expected ? `verified:  ${size} bytes, ${mismatches} mismatches` : 'verified:  (no reference for a URL given; bytes not checked)',
)
// The limit holds (give or take the chunk a fault maps at once, before the evictor runs).
const overLimit = limit !== undefined && peakResident > limit + 4 * MiB
if (limit) {
  const r = uffd.stats.residency
  console.log(
    `resident:  ${(peakResident / MiB).toFixed(1)} MiB at most (sampled) for a ${limit / MiB} MiB limit${overLimit ? ' (OVER IT)' : ''}; ${r.evictions} pages dropped in ${r.evictionBatches} batches, ${r.refaults} faulted again`,
  )
}

uffd.close()
region.close()
stopAll()
await new Promise((resolve) => setImmediate(resolve))
if (mismatches > 0 || errors.length > 0 || overLimit) process.exitCode = 1
