// Demo: a 256 MiB data set served lazily, page fault by page fault, while this thread reads it.
//
// The region starts empty: nothing of it is resident. Every time the main thread touches a page
// that is not there, the kernel stops the thread and queues a fault on the userfaultfd; the
// handler (pager.mjs) generates that part of the data set and maps it with UFFDIO_COPY, and the
// thread resumes as if the bytes had always been there. The reader then checks every word.
//
// The threading rule: a thread that takes a fault sleeps in the kernel until the fault is
// resolved, so it can never serve its own faults. The handler therefore runs in a worker thread
// (uffd.handleInWorker), which is awake to serve the main thread's reads.
//
// Usage: node examples/demo/main.mjs [--mib N] [--chunk-pages N] [--seed N]
//   --mib N          size of the data set in MiB (default 256)
//   --chunk-pages N  pages mapped per fault, i.e. readahead (default 16 = 64 KiB)
//   --seed N         seed of the data set (default 0x5eed)
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { Region, Userfaultfd } from 'userfaultfd'
import { integerFlag } from '../flags.mjs'
import { wordAt } from './dataset.mjs'

const MiB = 1024 * 1024

const { values: flags } = parseArgs({
  options: {
    mib: { type: 'string', default: '256' },
    'chunk-pages': { type: 'string', default: '16' },
    seed: { type: 'string', default: String(0x5eed) },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (flags.help) {
  console.log('usage: node examples/demo/main.mjs [--mib N] [--chunk-pages N] [--seed N]')
  process.exit(0)
}
const mib = integerFlag('mib', flags.mib, 1)
const chunkPages = integerFlag('chunk-pages', flags['chunk-pages'], 1)
const seed = integerFlag('seed', flags.seed, 0) >>> 0
const size = mib * MiB

// Progress: a line rewritten in place on a terminal, else a line every 64 MiB (or every quarter).
const tty = process.stderr.isTTY === true
const reportEvery = tty ? 4 * MiB : Math.min(64 * MiB, Math.max(MiB, Math.floor(size / 4 / MiB) * MiB))
function progress(done, seconds, final = false) {
  const line = `read ${(done / MiB).toFixed(0).padStart(String(mib).length)} / ${mib} MiB  ${(done / MiB / seconds).toFixed(0).padStart(5)} MiB/s`
  if (tty) process.stderr.write(`\r${line}${final ? '\n' : ''}`)
  else process.stderr.write(`${line}\n`)
}

const errors = []
const uffd = new Userfaultfd()
uffd.on('error', (error) => {
  errors.push(error)
  console.error(`error event: ${error.code}: ${error.message}`)
})
const region = Region.anonymous(size)
uffd.register(region)
await uffd.handleInWorker(new URL('./pager.mjs', import.meta.url), { workerData: { seed, chunkPages } })
console.log(`serving ${mib} MiB from a worker, ${chunkPages} page(s) per fault; the main thread reads it`)

// Read everything sequentially, one 1 MiB slice at a time, and compare every 32-bit word with the
// generator. The first word read is the first fault, timed on its own.
const words = new Uint32Array(region.buffer)
const start = performance.now()
const first = words[0]
const firstByteMs = performance.now() - start
let mismatches = first === wordAt(0, seed) ? 0 : 1
let firstBad = mismatches ? 0 : -1
let checked = 1
let checksum = first
const sliceWords = MiB / 4
for (let base = 0; base < words.length; base += sliceWords) {
  const end = Math.min(words.length, base + sliceWords)
  for (let i = base === 0 ? 1 : base; i < end; i++) {
    const w = words[i] // a missing page faults here, and the worker serves it
    checksum = (checksum + w) >>> 0
    if (w !== wordAt(i, seed)) {
      if (firstBad < 0) firstBad = i
      mismatches++
    }
  }
  checked += end - (base === 0 ? 1 : base)
  const done = end * 4
  if (done % reportEvery === 0 || done === size) progress(done, (performance.now() - start) / 1000, done === size)
}
const seconds = (performance.now() - start) / 1000

// Let 'error' events posted by the worker arrive before deciding the outcome.
await new Promise((resolve) => setTimeout(resolve, 50))

const stats = uffd.stats
const faults = stats.faults.missing
const served = stats.bytesMapped / MiB
const pagesPerFault = faults ? stats.bytesMapped / region.pageSize / faults : 0
console.log(
  `read:           ${mib} MiB in ${seconds.toFixed(3)} s = ${(size / MiB / seconds).toFixed(1)} MiB/s (every word read and verified)`,
)
console.log(`served:         ${served.toFixed(1)} MiB by ${faults} faults (${pagesPerFault.toFixed(1)} pages mapped per fault)`)
// A worker that reads the fd itself (direct, the default) takes faults with no batch handed over.
console.log(`batches:        ${stats.batches} handed over (the worker reads the fd itself)`)
console.log(`fallbacks:      ${stats.fallbacks}`)
console.log(`errors:         ${stats.errors} counted, ${errors.length} 'error' events`)
console.log(`first byte:     ${(firstByteMs * 1000).toFixed(0)} us after the worker was ready`)
console.log(`checksum:       0x${checksum.toString(16).padStart(8, '0')}`)
console.log(`verified:       ${checked} words, ${mismatches} mismatches`)
if (firstBad >= 0)
  console.error(
    `first mismatch at byte offset ${firstBad * 4}: read 0x${words[firstBad].toString(16)}, expected 0x${wordAt(firstBad, seed).toString(16)}`,
  )

uffd.close()
region.close()
if (mismatches > 0 || errors.length > 0) process.exitCode = 1
