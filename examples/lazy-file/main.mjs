// Lazy file: a large file mapped into memory that is read from disk only where it is touched.
//
// The region starts empty. It is registered with a native file source, so every missing page is
// read from the file with pread on the fault loop's own thread, with no JavaScript per fault; that
// is why the main thread itself may read the memory (no handler worker needed). Readahead maps 16
// pages per fault, and with `adaptive` the window doubles while the faults are sequential.
//
// The example touches random pages first, then reads the whole region in order, printing how many
// pages are resident as it goes, and compares every byte with the file read through node:fs.
//
// Usage: node examples/lazy-file/main.mjs [FILE] [--mib N] [--small]
//   FILE     a file to map (default: a generated file of known content in os.tmpdir(), removed after)
//   --mib N  size of the generated file in MiB (default 64; --small: 16)
//   --small  a smaller generated file, for the test suite
//   --random-reads N  random reads before the sequential pass (default: one per 64 pages)
//   --max-resident-mib N  keep at most N MiB of the mapping resident (a residency limit): the
//            oldest pages are dropped as the read goes on and read from the file again if touched
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { integerFlag } from '../flags.mjs'

const MiB = 1024 * 1024

const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    mib: { type: 'string' },
    small: { type: 'boolean', default: false },
    'random-reads': { type: 'string' },
    'max-resident-mib': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (flags.help) {
  console.log('usage: node examples/lazy-file/main.mjs [FILE] [--mib N] [--small] [--max-resident-mib N]')
  process.exit(0)
}
const mib = integerFlag('mib', flags.mib ?? (flags.small ? '16' : '64'), 1)

// The generated file's content: word k (bytes 4k..4k+3) is a hash of k, so every word differs and a
// page read from the wrong place cannot pass the comparison.
function wordOf(k) {
  let x = Math.imul(k ^ 0x2545f491, 0x9e3779b1)
  x ^= x >>> 15
  x = Math.imul(x, 0x85ebca77)
  x ^= x >>> 13
  return x >>> 0
}

function generate(path, size) {
  const chunk = new Uint32Array((4 * MiB) / 4)
  const fd = openSync(path, 'w')
  try {
    for (let at = 0; at < size; at += chunk.byteLength) {
      const first = at / 4
      for (let i = 0; i < chunk.length; i++) chunk[i] = wordOf(first + i)
      writeSync(fd, chunk, 0, Math.min(chunk.byteLength, size - at))
    }
  } finally {
    closeSync(fd)
  }
}

let tempDir
let path = positionals[0]
if (path === undefined) {
  tempDir = mkdtempSync(join(tmpdir(), 'uffd-lazy-file-'))
  path = join(tempDir, 'data.bin')
  const t0 = performance.now()
  generate(path, mib * MiB)
  console.log(`generated ${path}: ${mib} MiB in ${(performance.now() - t0).toFixed(0)} ms`)
}
const fileSize = statSync(path).size
if (fileSize === 0) {
  console.error(`${path} is empty: nothing to map`)
  process.exit(2)
}

const errors = []
const uffd = new Userfaultfd()
uffd.on('error', (error) => {
  errors.push(error)
  console.error(`error event: ${error.code}: ${error.message}`)
})
const region = Region.anonymous(fileSize) // rounded up to whole pages; past the end of the file: zeros
const { pageSize } = region
const totalPages = region.size / pageSize
// By default one random read per 64 pages: enough to show that only what is touched is read.
const randomReads = integerFlag('random-reads', flags['random-reads'] ?? String(Math.ceil(totalPages / 64)), 0)
const limitMiB = flags['max-resident-mib'] === undefined ? undefined : integerFlag('max-resident-mib', flags['max-resident-mib'], 1)
const maxResident = limitMiB === undefined ? undefined : limitMiB * MiB
uffd.register(region, { source: Source.file(path), readahead: { pages: 16, adaptive: true }, ...(maxResident ? { maxResident } : {}) })
console.log(
  `mapped ${path} (${fileSize} bytes, ${totalPages} pages) lazily: readahead 16 pages, adaptive${maxResident ? `, at most ${limitMiB} MiB resident` : ''}`,
)

// With a limit, what is resident now; without, every page mapped stays.
const resident = () => (maxResident ? uffd.stats.residency.residentBytes : uffd.stats.bytesMapped) / pageSize
// The loop thread bumps the counters just after the ioctl that wakes the reader, so the last
// fault's pages may show a moment later: wait until every fault read is counted as resolved.
async function settle() {
  for (let tries = 0; tries < 1000; tries++) {
    const { faults, native, duplicates } = uffd.stats
    if (native + duplicates >= faults.missing) return
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
}
const tty = process.stdout.isTTY === true
function progress(label, final = false) {
  const pages = resident()
  const line = `${label.padEnd(12)} ${String(pages).padStart(String(totalPages).length)} / ${totalPages} pages resident (${((100 * pages) / totalPages).toFixed(1).padStart(5)} %), ${uffd.stats.faults.missing} faults`
  if (tty) process.stdout.write(`\r${line}${final ? '\n' : ''}`)
  else console.log(line)
}

const file = openSync(path, 'r')
const memory = new Uint8Array(region.buffer) // zero-copy view of the mapping: reading it faults
const fromFile = Buffer.alloc(4 * MiB)
let mismatches = 0
let firstBad = -1
function compare(at, length) {
  const got = readSync(file, fromFile, 0, length, at)
  for (let i = 0; i < length; i++) {
    const expected = i < got ? fromFile[i] : 0 // past the end of the file the page holds zeros
    if (memory[at + i] !== expected) {
      if (firstBad < 0) firstBad = at + i
      mismatches++
    }
  }
}

// 1. Random reads: a small slice of a random page each time. Only the touched pages (and their
//    readahead window) become resident.
progress('start')
let state = 0x12345678
const random = () => {
  state ^= state << 13
  state ^= state >>> 17
  state ^= state << 5
  return (state >>> 0) / 2 ** 32
}
const t1 = performance.now()
for (let n = 0; n < randomReads; n++) {
  const page = Math.floor(random() * totalPages)
  const at = page * pageSize + Math.floor(random() * (pageSize - 64))
  compare(at, 64)
}
const randomMs = performance.now() - t1
await settle()
progress(`${randomReads} random`, true)
const afterRandom = resident()

// 2. A sequential read of everything, 1 MiB at a time, compared with the file.
const t2 = performance.now()
const step = MiB
for (let at = 0; at < region.size; at += step) {
  const length = Math.min(step, region.size - at)
  compare(at, length)
  const done = at + length
  if (done === region.size) await settle()
  if (done % (tty ? 4 * MiB : 16 * MiB) === 0 || done === region.size) progress('sequential', done === region.size)
}
const sequentialMs = performance.now() - t2

const stats = uffd.stats
console.log(`random reads:   ${randomReads} in ${randomMs.toFixed(1)} ms, ${afterRandom} pages resident after them`)
console.log(
  `sequential:     ${(region.size / MiB).toFixed(1)} MiB in ${sequentialMs.toFixed(1)} ms = ${(region.size / MiB / (sequentialMs / 1000)).toFixed(0)} MiB/s`,
)
console.log(
  `faults:         ${stats.faults.missing} (${stats.native} resolved natively), ${(stats.bytesMapped / pageSize / Math.max(1, stats.faults.missing)).toFixed(1)} pages per fault on average`,
)
console.log(`resident:       ${resident()} / ${totalPages} pages`)
if (maxResident) {
  const { evictions, evictionBatches, refaults } = stats.residency
  console.log(`evicted:        ${evictions} pages in ${evictionBatches} batches, ${refaults} faulted in again`)
}
console.log(`verified:       ${randomReads * 64 + region.size} bytes against the file, ${mismatches} mismatches`)
if (firstBad >= 0) console.error(`first mismatch at byte ${firstBad}`)
// Without a limit every page is resident after the full read; with one, no more than the limit.
const allResident = maxResident ? resident() * pageSize <= maxResident : resident() === totalPages
if (!allResident)
  console.error(`expected ${maxResident ? `at most ${limitMiB} MiB` : 'every page'} resident after the full read, got ${resident()} pages`)

closeSync(file)
uffd.close()
region.close()
if (tempDir) rmSync(tempDir, { recursive: true, force: true })
await new Promise((resolve) => setImmediate(resolve)) // let any last 'error' event arrive
if (mismatches > 0 || errors.length > 0 || stats.fallbacks > 0 || !allResident) process.exitCode = 1
