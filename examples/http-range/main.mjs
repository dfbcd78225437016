// HTTP range: memory backed by an HTTP server, fetched a chunk at a time on first touch.
//
// A local server (server.mjs, in its own worker thread, on 127.0.0.1 and an ephemeral port) serves
// a generated buffer with Range requests. The region starts empty; its faults go to an async
// handler (pager.mjs) that uffd.handleInWorker() runs in a worker: it fetches 64 KiB from the
// faulting page on and maps it with fault.copy(). Because the handler awaits the network, the
// worker takes further faults meanwhile: several reader threads (reader.mjs, each attaching the
// region with Region.attach(region.share())) read different parts at once, the main thread reads
// the last part between polls of uffd.stats, and the example prints the most faults in flight it saw.
//
// Usage: node examples/http-range/main.mjs [--mib N] [--readers N] [--latency-ms N] [--small]
//   --mib N         size of the served data in MiB (default 16; --small: 4)
//   --readers N     reader threads (default 8; --small: 4)
//   --latency-ms N  delay of each response (default 5)
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { Worker } from 'node:worker_threads'
import { Region, Userfaultfd } from 'userfaultfd'
import { integerFlag } from '../flags.mjs'
import { generate } from './data.mjs'

const MiB = 1024 * 1024
const CHUNK = 64 * 1024

const { values: flags } = parseArgs({
  options: {
    mib: { type: 'string' },
    readers: { type: 'string' },
    'latency-ms': { type: 'string', default: '5' },
    seed: { type: 'string', default: '7' },
    small: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (flags.help) {
  console.log('usage: node examples/http-range/main.mjs [--mib N] [--readers N] [--latency-ms N] [--small]')
  process.exit(0)
}
const mib = integerFlag('mib', flags.mib ?? (flags.small ? '4' : '16'), 1)
const readers = integerFlag('readers', flags.readers ?? (flags.small ? '4' : '8'), 1)
const latencyMs = integerFlag('latency-ms', flags['latency-ms'], 0)
const seed = integerFlag('seed', flags.seed, 0)
const size = mib * MiB

const failures = []
function fail(what) {
  failures.push(what)
  console.error(what)
}

// Runs a worker; `next()` resolves with its next message. A worker error is a failure.
function start(url, workerData) {
  const worker = new Worker(url, { workerData })
  const name = url.pathname.split('/').pop()
  const exited = new Promise((resolve) => worker.once('exit', resolve))
  worker.on('error', (error) => fail(`${name} failed: ${error.message}`))
  const next = () =>
    new Promise((resolve, reject) => {
      worker.once('message', resolve)
      worker.once('error', reject)
      exited.then(() => reject(new Error(`${name} exited`)))
    })
  return { worker, next, exited }
}

// The data and its server.
const data = generate(size, seed)
const server = start(new URL('./server.mjs', import.meta.url), { data, latencyMs })
const { port } = await server.next()
const url = `http://127.0.0.1:${port}/data.bin`
console.log(`serving ${mib} MiB at ${url} (Range requests, ${latencyMs} ms latency each)`)

// The region, served by the async pager.
const uffd = new Userfaultfd({ timeoutMs: 10_000 })
uffd.on('error', (error) => fail(`error event: ${error.code}: ${error.message}`))
const region = Region.anonymous(size)
uffd.register(region)
await uffd.handleInWorker(new URL('./pager.mjs', import.meta.url), { workerData: { url, chunkBytes: CHUNK } })

// Parts: one per reader thread and one for the main thread, whole chunks each.
const chunks = size / CHUNK
const parts = []
for (let i = 0; i <= readers; i++) {
  const from = Math.floor((i * chunks) / (readers + 1)) * CHUNK
  const to = Math.floor(((i + 1) * chunks) / (readers + 1)) * CHUNK
  parts.push({ start: from, end: to })
}
const mainPart = parts.pop()
console.log(
  `${readers} reader thread${readers === 1 ? '' : 's'} read ${(parts[0].end - parts[0].start) / 1024} KiB each, the main thread the last ${(mainPart.end - mainPart.start) / 1024} KiB`,
)

// Poll the stats while the readers read: the main thread is free whenever it is not reading.
let maxInFlight = 0
let maxQueued = 0
const poll = () => {
  const { inFlight, queued } = uffd.stats
  maxInFlight = Math.max(maxInFlight, inFlight)
  maxQueued = Math.max(maxQueued, queued)
}
const poller = setInterval(poll, 1)

const readerThreads = parts.map((part) =>
  start(new URL('./reader.mjs', import.meta.url), { shared: region.share(), expected: data, ...part }),
)
await Promise.all(readerThreads.map((reader) => reader.next())) // each has attached the region
const done = readerThreads.map((reader) => reader.next().catch((error) => ({ error })))
const t0 = performance.now()
for (const reader of readerThreads) reader.worker.postMessage('go')

// The main thread reads its part too, 64 KiB at a time, yielding in between so that the poller
// runs (while it reads a missing page, this thread sleeps in the kernel).
const memory = new Uint8Array(region.buffer)
const want = new Uint8Array(data)
let mainMismatches = 0
for (let at = mainPart.start; at < mainPart.end; at += CHUNK) {
  for (let i = at; i < at + CHUNK; i++) if (memory[i] !== want[i]) mainMismatches++
  poll()
  await new Promise((resolve) => setImmediate(resolve))
}
const mainMs = performance.now() - t0

const results = await Promise.all(done)
const seconds = (performance.now() - t0) / 1000
clearInterval(poller)
await Promise.all(readerThreads.map((reader) => reader.exited))

let mismatches = mainMismatches
for (const [i, result] of results.entries()) {
  if (result.error) continue // reported by the worker's 'error' listener
  mismatches += result.mismatches
  if (result.mismatches) fail(`reader ${i}: ${result.mismatches} mismatches, the first at byte ${result.firstBad}`)
}
if (mainMismatches) fail(`main thread: ${mainMismatches} mismatches`)

const answer = server.next()
server.worker.postMessage('stats')
const served = await answer
// The counters are bumped just after the ioctl that wakes a reader: give the last ones a moment.
for (let tries = 0; tries < 100 && uffd.stats.bytesMapped < size; tries++) await new Promise((resolve) => setTimeout(resolve, 1))
const stats = uffd.stats

console.log(
  `read:           ${mib} MiB in ${seconds.toFixed(3)} s by ${readers} readers + the main thread (${mainMs.toFixed(0)} ms for its part)`,
)
console.log(
  `faults:         ${stats.faults.missing} missing, ${stats.resolutions.copy} copies, ${stats.eexist} EEXIST, ${stats.duplicates} duplicates`,
)
console.log(`in flight:      at most ${maxInFlight} faults at once (${maxQueued} queued at most)`)
console.log(`server:         ${served.requests} range requests, ${(served.bytesServed / MiB).toFixed(1)} MiB served`)
console.log(`mapped:         ${(stats.bytesMapped / MiB).toFixed(1)} MiB, ${stats.fallbacks} fallbacks`)
console.log(`verified:       ${size} bytes, ${mismatches} mismatches`)
if (stats.bytesMapped !== size) fail(`expected ${size} bytes mapped, got ${stats.bytesMapped}`)
if (stats.fallbacks) fail(`${stats.fallbacks} faults were resolved by the fallback`)

uffd.close()
region.close()
server.worker.postMessage('close')
await server.exited
if (failures.length > 0 || mismatches > 0) process.exitCode = 1
