// The children of bench/residency.mjs (that script with --child): one measurement each, a scan
// or random reads over a hot set, through a file source with and without maxResident; and the
// /proc readers the parent also uses to sample a child.
import { readFileSync, writeFileSync } from 'node:fs'

const MiB = 2 ** 20
const PAGE = 4096

/** The byte every page `i` of the data file holds. */
export const pageByte = (i) => 1 + ((i * 7 + 3) % 255)

/** A field of /proc/PID/status (VmRSS, VmHWM, ...), in KiB. */
export function statusKiB(key, pid = 'self') {
  const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) : undefined
}

/** The Rss of the mapping that starts at `address` (hex), in KiB, from /proc/PID/smaps. */
export function regionRssKiB(address, pid = 'self') {
  const text = readFileSync(`/proc/${pid}/smaps`, 'utf8')
  const at = text.indexOf(`\n${address}-`)
  const from = at < 0 ? (text.startsWith(`${address}-`) ? 0 : -1) : at
  if (from < 0) return undefined
  const m = /\nRss:\s+(\d+) kB/.exec(text.slice(from, from + 4000))
  return m ? Number(m[1]) : undefined
}

function resetPeak() {
  try {
    writeFileSync('/proc/self/clear_refs', '5')
    return true
  } catch {
    return false
  }
}

/** The region in views of at most 1 GiB (a region of 4 GiB or more has no single buffer on Node.js 20). */
function viewsOf(region, size) {
  const part = 1024 * MiB
  const views = []
  for (let at = 0; at < size; at += part) views.push(region.bytes(at, Math.min(part, size - at)))
  return views
}

async function registered(spec) {
  const { Region, Source, Userfaultfd } = await import('userfaultfd')
  const uffd = new Userfaultfd()
  const region = Region.anonymous(spec.size)
  const options = { source: Source.file(spec.file) }
  if (spec.readahead) options.readahead = spec.readahead
  if (spec.limit) options.maxResident = spec.limit
  uffd.register(region, options)
  const errors = []
  uffd.on('error', (error) => errors.push(String(error?.message ?? error)))
  return { uffd, region, errors, address: region.address.toString(16) }
}

function waitGo() {
  return new Promise((done) =>
    process.stdin.once('data', () => {
      process.stdin.pause()
      done()
    }),
  )
}

export async function childScan(spec) {
  const { uffd, region, errors, address } = await registered(spec)
  const views = viewsOf(region, spec.size)
  const pagesPerView = (1024 * MiB) / PAGE
  const pages = spec.size / PAGE
  process.stdout.write(`${JSON.stringify({ address })}\n`)
  await waitGo()
  const reset = resetPeak()
  const rssBeforeKiB = statusKiB('VmRSS')
  let bad = 0
  const t0 = performance.now()
  for (let v = 0; v < views.length; v++) {
    const u8 = views[v]
    const n = u8.length / PAGE
    const first = v * pagesPerView
    for (let i = 0; i < n; i++) if (u8[i * PAGE] !== 1 + (((first + i) * 7 + 3) % 255)) bad++
  }
  const ms = performance.now() - t0
  const hwmKiB = statusKiB('VmHWM')
  const regionRssEndKiB = regionRssKiB(address)
  const stats = uffd.stats
  // Untimed: the first pages again (dropped long ago under a limit: each faults again), every byte
  // of each checked at two places.
  let badAgain = 0
  const again = Math.min(pages, (64 * MiB) / PAGE)
  for (let i = 0; i < again; i++) {
    const u8 = views[Math.floor(i / pagesPerView)]
    const at = (i % pagesPerView) * PAGE
    if (u8[at] !== pageByte(i) || u8[at + PAGE - 1] !== pageByte(i)) badAgain++
  }
  const residency = uffd.stats.residency
  uffd.close()
  region.close()
  return {
    ms,
    bad,
    badAgain,
    againPages: again,
    rssBeforeKiB,
    hwmKiB,
    hwmReset: reset,
    regionRssEndKiB,
    residency: stats.residency,
    residencyAfterAgain: residency,
    faults: stats.faults.missing,
    wpFaults: stats.faults.wp,
    errors: errors.slice(0, 5),
    errorCount: errors.length,
  }
}

/** xorshift32: the same pages and reads in every run of a repetition. */
function random(seed) {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x / 2 ** 32
  }
}

export async function childRandom(spec) {
  const { uffd, region, errors, address } = await registered(spec)
  const views = viewsOf(region, spec.size)
  const shift = 18 // 2^18 pages per 1 GiB view
  const mask = 2 ** shift - 1
  const pages = spec.size / PAGE
  const rand = random(spec.seed)
  // The hot set: distinct random pages across the whole file.
  const hotCount = Math.floor(spec.hotBytes / PAGE)
  const taken = new Uint8Array(pages)
  const hot = new Uint32Array(hotCount)
  for (let k = 0; k < hotCount; ) {
    const p = Math.floor(rand() * pages)
    if (!taken[p]) {
      taken[p] = 1
      hot[k++] = p
    }
  }
  const read = (p, off) => views[p >>> shift][(p & mask) * PAGE + off]
  let bad = 0
  const w0 = performance.now()
  for (let k = 0; k < hotCount; k++) if (read(hot[k], 0) !== pageByte(hot[k])) bad++
  const warmMs = performance.now() - w0
  // Let the evictor finish what the warm-up started.
  await new Promise((done) => setTimeout(done, 200))
  const before = uffd.stats
  const reads = spec.reads
  // The reads, drawn first so that the timed loop only reads.
  const target = new Uint32Array(reads)
  const offset = new Uint16Array(reads)
  let cold = 0
  for (let k = 0; k < reads; k++) {
    if (rand() < spec.coldShare) {
      target[k] = Math.floor(rand() * pages)
      cold++
    } else target[k] = hot[Math.floor(rand() * hotCount)]
    offset[k] = Math.floor(rand() * PAGE)
  }
  // In two halves: what the second half re-faults says what the policy holds once it has learnt.
  const half = reads >> 1
  const t0 = performance.now()
  for (let k = 0; k < half; k++) if (read(target[k], offset[k]) !== pageByte(target[k])) bad++
  const mid = uffd.stats
  for (let k = half; k < reads; k++) if (read(target[k], offset[k]) !== pageByte(target[k])) bad++
  const ms = performance.now() - t0
  const after = uffd.stats
  const regionRssEndKiB = regionRssKiB(address)
  // The evictor counts a batch once all of it is dropped (one madvise per run of adjacent pages):
  // its evictions are read once it is done.
  await new Promise((done) => setTimeout(done, 300))
  const settled = uffd.stats
  uffd.close()
  region.close()
  return {
    hotPages: hotCount,
    reads,
    coldReads: cold,
    warmMs,
    ms,
    bad,
    refaults: after.residency.refaults - before.residency.refaults,
    secondHalfReads: reads - half,
    secondHalfRefaults: after.residency.refaults - mid.residency.refaults,
    missingFaults: after.faults.missing - before.faults.missing,
    evictions: settled.residency.evictions - before.residency.evictions,
    residentAfterReadsBytes: after.residency.residentBytes,
    warmupEvictions: before.residency.evictions,
    residentEndBytes: settled.residency.residentBytes,
    regionRssEndKiB,
    errors: errors.slice(0, 5),
    errorCount: errors.length,
  }
}
