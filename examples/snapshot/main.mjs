// Snapshot: incremental snapshots of a region, copying only the pages written since the last one.
//
// The userfaultfd is opened with WP_ASYNC and the region registered for write-protection and
// protected whole. A write to a protected page then takes no fault that anyone must handle: the
// kernel lifts that page's protection itself, and uffd.dirtyPages(region, { clear: true }) returns
// the pages written since the last call and protects them again.
//
// The main thread fills the region and takes a full base snapshot; then, for 3 rounds, a worker
// thread (mutator.mjs) writes into random pages and the main thread copies only the dirty pages
// into an increment (a Map of offset -> page copy). Finally it rebuilds the memory from the base
// and the increments into a second buffer and checks that it equals the region's content.
//
// Usage: node examples/snapshot/main.mjs [--mib N] [--rounds N] [--writes N] [--small]
//   --mib N     size of the region in MiB (default 16; --small: 4)
//   --rounds N  incremental snapshots (default 3)
//   --writes N  writes per round into random pages (default: one per 32 pages)
import { once } from 'node:events'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { Worker } from 'node:worker_threads'
import { Region, Userfaultfd } from 'userfaultfd'
import { integerFlag } from '../flags.mjs'

const MiB = 1024 * 1024

const { values: flags } = parseArgs({
  options: {
    mib: { type: 'string' },
    rounds: { type: 'string', default: '3' },
    writes: { type: 'string' },
    small: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
if (flags.help) {
  console.log('usage: node examples/snapshot/main.mjs [--mib N] [--rounds N] [--writes N] [--small]')
  process.exit(0)
}
const mib = integerFlag('mib', flags.mib ?? (flags.small ? '4' : '16'), 1)
const rounds = integerFlag('rounds', flags.rounds, 1)

const { features } = Userfaultfd.probe()
if (!features.has('WP_ASYNC')) {
  console.log(`skipped: this kernel lacks WP_ASYNC (Linux 6.7); it offers ${[...features].join(' ')}`)
  process.exit(0)
}

const failures = []
function fail(what) {
  failures.push(what)
  console.error(what)
}

const uffd = new Userfaultfd({ features: ['WP_ASYNC'] })
uffd.on('error', (error) => fail(`error event: ${error.code}: ${error.message}`))
const region = Region.anonymous(mib * MiB)
const { pageSize } = region
const totalPages = region.size / pageSize
const writes = integerFlag('writes', flags.writes ?? String(Math.ceil(totalPages / 32)), 0)
uffd.register(region, { wp: true }) // write-protection only: missing pages fill with zeros as usual

// The initial content, then the base snapshot: a full copy.
const memory = new Uint8Array(region.buffer)
const words = new Uint32Array(region.buffer)
for (let k = 0; k < words.length; k++) words[k] = Math.imul(k ^ 0x5bd1e995, 0x9e3779b1) >>> 0
const base = memory.slice()
uffd.writeProtect(region, 0, region.size, true)
const clean = uffd.dirtyPages(region, { clear: true })
if (clean.length) fail(`${clean.length} pages reported dirty right after protecting`)
console.log(`region: ${mib} MiB = ${totalPages} pages, base snapshot ${mib} MiB; ${rounds} rounds of ${writes} writes into random pages`)

const mutator = new Worker(new URL('./mutator.mjs', import.meta.url), { workerData: { shared: region.share(), seed: 0xc0ffee } })
mutator.on('error', (error) => fail(`mutator.mjs failed: ${error.message}`))
const mutatorExit = once(mutator, 'exit')

const increments = []
let copiedBytes = 0
for (let round = 1; round <= rounds; round++) {
  const reply = once(mutator, 'message')
  mutator.postMessage({ round, writes })
  const [{ written }] = await reply

  const t0 = performance.now()
  const dirty = uffd.dirtyPages(region, { clear: true })
  const increment = new Map()
  for (const offset of dirty) increment.set(offset, memory.slice(offset, offset + pageSize))
  const ms = performance.now() - t0
  increments.push(increment)
  copiedBytes += dirty.length * pageSize

  // Every page the mutator wrote must be reported, and nothing else (nobody else writes).
  const reported = new Set(dirty)
  const missed = written.filter((offset) => !reported.has(offset))
  const extra = dirty.length - (written.length - missed.length)
  if (missed.length) fail(`round ${round}: ${missed.length} written pages not reported dirty, e.g. offset ${missed[0]}`)
  if (extra) fail(`round ${round}: ${extra} pages reported dirty that were not written`)
  const again = uffd.dirtyPages(region)
  if (again.length) fail(`round ${round}: ${again.length} pages still dirty after { clear: true }`)
  console.log(
    `round ${round}: ${String(dirty.length).padStart(5)} / ${totalPages} pages dirty (${((100 * dirty.length) / totalPages).toFixed(1).padStart(4)} %), copied ${((dirty.length * pageSize) / 1024).toFixed(0)} KiB in ${ms.toFixed(1)} ms`,
  )
}
mutator.postMessage({})
await mutatorExit

// Restore: the base, then each increment in order, into a second buffer.
const restored = base.slice()
for (const increment of increments) for (const [offset, page] of increment) restored.set(page, offset)
let mismatches = 0
let firstBad = -1
for (let i = 0; i < memory.length; i++) {
  if (restored[i] !== memory[i]) {
    if (firstBad < 0) firstBad = i
    mismatches++
  }
}
// Pages where the base alone differs from the region: what the increments had to supply.
let stalePages = 0
for (let offset = 0; offset < memory.length; offset += pageSize) {
  if (Buffer.compare(base.subarray(offset, offset + pageSize), memory.subarray(offset, offset + pageSize)) !== 0) stalePages++
}
const changed = increments.reduce((pages, increment) => {
  for (const offset of increment.keys()) pages.add(offset)
  return pages
}, new Set()).size
console.log(
  `snapshots:      base ${mib} MiB + ${rounds} increments of ${(copiedBytes / MiB).toFixed(2)} MiB in all (${changed} distinct pages changed)`,
)
console.log(`restored:       ${memory.length} bytes from base + increments, ${mismatches} mismatches with the region`)
console.log(`base alone:     differs from the region in ${stalePages} pages`)
if (stalePages === 0 && writes > 0) fail('the mutator changed nothing: the check proves nothing')
if (mismatches) fail(`the restored memory differs from the region, first at byte ${firstBad}`)
const stats = uffd.stats
console.log(`faults:         ${stats.faults.wp} wp faults reached JavaScript (WP_ASYNC resolves writes in the kernel)`)

uffd.close()
region.close()
if (failures.length > 0) process.exitCode = 1
