#!/usr/bin/env node
// The residency limit over an object store (issue 20): an object in SeaweedFS (started here on
// loopback ports, killed after) scanned in order, one byte checked per page, through
// Source.objectStore with maxResident, next to the same scan with no limit, measured side by side
// in one run, contenders alternating repetition by repetition. Goals: throughput >= 0.8x the
// unbounded scan; the region's resident bytes at most 1.1x the limit (sampled from its Rss line in
// /proc/self/smaps every 16 MiB of the scan, and from stats.residency).
//
//   node bench/residency-store.mjs [--size 1024M] [--limit 256M] [--reps N] [--out DIR]
//
// Needs `weed` (.tools/venv/bin/weed, which .ci/run installs; or WEED=path). Prints a table and
// writes DIR/userfaultfd-bench-residency-store.json.
import { readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { startSeaweed } from '../scripts/seaweed.mjs'
import { median } from './common.mjs'

process.env.AWS_EC2_METADATA_DISABLED = 'true'
const MiB = 2 ** 20
const PAGE = 4096
const { values: args } = parseArgs({
  options: { size: { type: 'string' }, limit: { type: 'string' }, reps: { type: 'string' }, out: { type: 'string' } },
})
const mib = (text, fallback) => (text ? Number.parseInt(text, 10) * (/g$/i.test(text) ? 1024 : 1) * MiB : fallback)
const SIZE = mib(args.size, 1024 * MiB)
const LIMIT = mib(args.limit, 256 * MiB)
const REPS = Number(args.reps ?? 3)
const weed = process.env.WEED ?? join(import.meta.dirname, '..', '.tools', 'venv', 'bin', 'weed')

/** Byte 0 of page p of the object. */
const pageByte = (p) => (p * 13 + 7) & 0xff

/** The region's resident bytes: its Rss line in /proc/self/smaps. */
function regionRss(address) {
  const text = readFileSync('/proc/self/smaps', 'utf8')
  const at = text.indexOf(`${address.toString(16)}-`)
  if (at < 0) return 0
  const rss = /\nRss:\s+(\d+) kB/.exec(text.slice(at))
  return Number(rss?.[1] ?? 0) * 1024
}

async function scan(store, limit) {
  const source = await Source.objectStore('s3://residency/object.bin', { endpoint: store.endpoint, anonymous: true, env: {} })
  const uffd = new Userfaultfd()
  const region = Region.anonymous(SIZE)
  uffd.register(region, { source, ...(limit ? { maxResident: limit } : {}) })
  const memory = new Uint8Array(region.buffer)
  let wrong = 0
  let peak = 0
  const started = performance.now()
  for (let p = 0; p < SIZE / PAGE; p++) {
    if (memory[p * PAGE] !== pageByte(p)) wrong++
    if (p % ((16 * MiB) / PAGE) === 0) peak = Math.max(peak, regionRss(region.address))
  }
  const ms = performance.now() - started
  peak = Math.max(peak, regionRss(region.address))
  const { residency } = uffd.stats
  const { requests, bytesFetched } = source.objectStats
  uffd.close()
  region.close()
  return { ms, mibps: SIZE / MiB / (ms / 1000), peakRss: peak, wrong, residency, requests, bytesFetched }
}

const store = await startSeaweed(weed, 'residency')
try {
  const body = new Uint8Array(SIZE)
  for (let p = 0; p < SIZE / PAGE; p++) body.fill(pageByte(p), p * PAGE, (p + 1) * PAGE)
  const put = await fetch(`${store.endpoint}/residency/object.bin`, { method: 'PUT', body })
  if (!put.ok) throw new Error(`upload failed: HTTP ${put.status}`)
  process.stderr.write(`uploaded ${SIZE / MiB} MiB to SeaweedFS on ${store.endpoint}\n`)
  const runs = { limited: [], unbounded: [] }
  for (let rep = 0; rep < REPS; rep++) {
    const order = rep % 2 === 0 ? ['limited', 'unbounded'] : ['unbounded', 'limited']
    for (const which of order) {
      const run = await scan(store, which === 'limited' ? LIMIT : undefined)
      runs[which].push(run)
      process.stderr.write(
        `rep ${rep + 1} ${which}: ${run.mibps.toFixed(0)} MiB/s, region Rss peak ${(run.peakRss / MiB).toFixed(0)} MiB\n`,
      )
    }
  }
  const row = (which) => {
    const all = runs[which]
    return {
      mibps: median(all.map((r) => r.mibps)),
      peakRss: Math.max(...all.map((r) => r.peakRss)),
      wrong: all.reduce((s, r) => s + r.wrong, 0),
      evictions: all.at(-1).residency.evictions,
      refaults: all.at(-1).residency.refaults,
      fetchedMiB: all.at(-1).bytesFetched / MiB,
      requests: all.at(-1).requests,
    }
  }
  const limited = row('limited')
  const unbounded = row('unbounded')
  const ratio = limited.mibps / unbounded.mibps
  const rssRatio = limited.peakRss / LIMIT
  console.log(`### object-store scan: ${SIZE / MiB} MiB in SeaweedFS on loopback, in order, ${REPS} repetition(s), medians\n`)
  console.log('| contender | MiB/s | vs unbounded | region Rss peak (sampled) | evictions | fetched | requests | wrong bytes |')
  console.log('|---|---|---|---|---|---|---|---|')
  for (const [label, r] of [
    [`Source.objectStore, maxResident ${LIMIT / MiB} MiB`, limited],
    ['Source.objectStore, no limit', unbounded],
  ]) {
    const vs = r === unbounded ? '1.00x' : `${ratio.toFixed(2)}x`
    console.log(
      `| ${label} | ${r.mibps.toFixed(0)} | ${vs} | ${(r.peakRss / MiB).toFixed(0)} MiB | ${r.evictions} | ${r.fetchedMiB.toFixed(0)} MiB | ${r.requests} | ${r.wrong} |`,
    )
  }
  console.log(`\ngoals: throughput >= 0.8x unbounded: ${ratio >= 0.8 ? 'met' : 'not met'} (${ratio.toFixed(2)}x);`)
  console.log(`region Rss peak <= 1.1x the limit: ${rssRatio <= 1.1 ? 'met' : 'not met'} (${rssRatio.toFixed(2)}x)`)
  const out = resolve(process.cwd(), args.out ?? '.')
  writeFileSync(
    join(out, 'userfaultfd-bench-residency-store.json'),
    `${JSON.stringify({ size: SIZE, limit: LIMIT, reps: REPS, runs, ratio, rssRatio }, null, 2)}\n`,
  )
  console.log(`\nReproduce: node bench/residency-store.mjs --size ${SIZE / MiB}M --limit ${LIMIT / MiB}M --reps ${REPS}`)
} finally {
  store.stop()
}
