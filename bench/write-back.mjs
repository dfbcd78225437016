// Write-back through a residency limit (issue 20): writes, one to each page of a region in a random
// order (readahead 1 page, the default), and then in order (adaptive readahead), through
// `Source.file(path, { writable: true })` with `maxResident` a 16th of the region, then
// `await uffd.flush()`; against plain pwrite (node:fs writeSync) of the same whole pages at the same
// offsets in the same order. Every written byte is checked in the file after.
//
//   node bench/write-back.mjs [--size 512M] [--reps N] [--out DIR]
//
// Prints a table with the ratio to pwrite (goal >= 0.5x) and writes DIR/userfaultfd-bench-write-back.json.
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { Region, Source, Userfaultfd } from 'userfaultfd'

const MiB = 2 ** 20
const PAGE = 4096
const { values: args } = parseArgs({
  options: { size: { type: 'string' }, reps: { type: 'string' }, out: { type: 'string' } },
})
const SIZE = args.size ? Number.parseInt(args.size, 10) * (/g$/i.test(args.size) ? 1024 : 1) * MiB : 512 * MiB
const REPS = Number(args.reps ?? 3)
const PAGES = SIZE / PAGE
const work = mkdtempSync(join(tmpdir(), 'uffd-bench-write-back-'))

/** Each page once, in an order of its own (xorshift), the same for both contenders. */
function order() {
  const pages = Uint32Array.from({ length: PAGES }, (_, i) => i)
  let x = 0x9e3779b9
  for (let i = PAGES - 1; i > 0; i--) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    const j = (x >>> 0) % (i + 1)
    ;[pages[i], pages[j]] = [pages[j], pages[i]]
  }
  return pages
}

function freshFile(name) {
  const path = join(work, name)
  writeFileSync(path, Buffer.alloc(SIZE, 0x11))
  readFileSync(path) // in the page cache before the clock starts, for both
  return path
}

const vmRssMiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]) / 1024

/** The 8-byte mark written into page `p`. */
const mark = (p) => BigInt(p) * 2654435761n + 7n

async function writeBack(pages, readahead) {
  const file = freshFile('written.bin')
  const uffd = new Userfaultfd()
  const region = Region.anonymous(SIZE)
  const limit = SIZE / 16
  uffd.register(region, { source: Source.file(file, { writable: true }), maxResident: limit, readahead })
  const words = new BigUint64Array(region.buffer)
  const rssBefore = vmRssMiB()
  let rssPeak = 0
  const started = performance.now()
  for (let i = 0; i < pages.length; i++) {
    const p = pages[i]
    words[(p * PAGE) / 8] = mark(p)
    if (i % 4096 === 0) rssPeak = Math.max(rssPeak, vmRssMiB() - rssBefore)
  }
  await uffd.flush()
  const ms = performance.now() - started
  const stats = { ...uffd.stats.residency, faults: uffd.stats.faults }
  uffd.close()
  region.close()
  return { ms, file, rssPeakMiB: rssPeak, limitMiB: limit / MiB, stats }
}

function pwrite(pages) {
  const file = freshFile('pwritten.bin')
  const fd = openSync(file, 'r+')
  const page = Buffer.alloc(PAGE, 0x11)
  const started = performance.now()
  for (const p of pages) {
    page.writeBigUInt64LE(mark(p), 0)
    writeSync(fd, page, 0, PAGE, p * PAGE)
  }
  const ms = performance.now() - started
  closeSync(fd)
  return { ms, file }
}

/** Wrong bytes in `file`: every page must hold its mark, then 0x11s. */
function wrongIn(file) {
  const fd = openSync(file, 'r')
  const chunk = Buffer.alloc(16 * MiB)
  let wrong = 0
  for (let at = 0; at < SIZE; at += chunk.length) {
    readSync(fd, chunk, 0, chunk.length, at)
    for (let off = 0; off < chunk.length; off += PAGE) {
      const p = (at + off) / PAGE
      if (chunk.readBigUInt64LE(off) !== mark(p)) wrong++
      for (let i = off + 8; i < off + PAGE; i += 512) if (chunk[i] !== 0x11) wrong++
    }
  }
  closeSync(fd)
  return wrong
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const mibps = (ms) => SIZE / MiB / (ms / 1000)
const patterns = [
  { id: 'random', label: 'random order, readahead 1 page', pages: order(), readahead: undefined },
  {
    id: 'sequential',
    label: 'in order, adaptive readahead',
    pages: Uint32Array.from({ length: PAGES }, (_, i) => i),
    readahead: { adaptive: true },
  },
]
const results = {}
for (const pattern of patterns) {
  const runs = { writeBack: [], pwrite: [] }
  for (let rep = 0; rep < REPS; rep++) {
    const wb = await writeBack(pattern.pages, pattern.readahead)
    wb.wrong = wrongIn(wb.file)
    rmSync(wb.file)
    const pw = pwrite(pattern.pages)
    pw.wrong = wrongIn(pw.file)
    rmSync(pw.file)
    runs.writeBack.push({ ...wb, file: undefined })
    runs.pwrite.push({ ...pw, file: undefined })
    process.stderr.write(`${pattern.id} rep ${rep + 1}: write-back ${wb.ms.toFixed(0)} ms, pwrite ${pw.ms.toFixed(0)} ms\n`)
  }
  const wbMs = median(runs.writeBack.map((r) => r.ms))
  const pwMs = median(runs.pwrite.map((r) => r.ms))
  results[pattern.id] = { label: pattern.label, runs, ratio: mibps(wbMs) / mibps(pwMs), wbMs, pwMs }
}
rmSync(work, { recursive: true, force: true })

console.log(`### write-back: one write to each of ${PAGES} pages (${SIZE / MiB} MiB), ${REPS} repetition(s), medians\n`)
console.log('| pattern | contender | MiB/s of pages | vs pwrite | faults | VmRSS growth seen (sampled) | wrong bytes |')
console.log('|---|---|---|---|---|---|---|')
for (const { label, runs, ratio, wbMs, pwMs } of Object.values(results)) {
  const last = runs.writeBack[runs.writeBack.length - 1]
  const faults = last.stats.faults
  console.log(
    `| ${label} | Source.file writable, maxResident ${last.limitMiB} MiB, then flush() | ${mibps(wbMs).toFixed(0)} | ${ratio.toFixed(2)}x | ${faults.missing} missing, ${faults.wp} wp | ${Math.max(...runs.writeBack.map((r) => r.rssPeakMiB)).toFixed(0)} MiB (limit ${last.limitMiB}) | ${runs.writeBack.reduce((s, r) => s + r.wrong, 0)} |`,
  )
  console.log(
    `| ${label} | pwrite of the same pages (writeSync) | ${mibps(pwMs).toFixed(0)} | 1.00x | - | - | ${runs.pwrite.reduce((s, r) => s + r.wrong, 0)} |`,
  )
}
const ratio = results.random.ratio
console.log(`\ngoal (random order): >= 0.5x pwrite: ${ratio >= 0.5 ? 'met' : 'not met'} (${ratio.toFixed(2)}x)`)
for (const [id, { runs }] of Object.entries(results)) {
  console.log(`residency stats of the last ${id} run: ${JSON.stringify(runs.writeBack[runs.writeBack.length - 1].stats)}`)
}
const out = resolve(process.cwd(), args.out ?? '.')
writeFileSync(join(out, 'userfaultfd-bench-write-back.json'), `${JSON.stringify({ size: SIZE, reps: REPS, results, ratio }, null, 2)}\n`)
console.log(`\nReproduce: node bench/write-back.mjs --size ${SIZE / MiB}M --reps ${REPS}`)
