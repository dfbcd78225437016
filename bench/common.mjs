// Helpers shared by the benchmark runner (run.mjs), its child processes (child.mjs) and worker threads.

/** The byte at offset 0 of page `i` of the scan file (baseline.c computes the same). */
export function scanByte(i) {
  return (i * 7 + 3) & 0xff
}

/** The byte a copied page holds (baseline.c's FILL_BYTE). */
export const FILL = 0x5a

/**
 * The layout of the tally the scaling scenario gives its handler workers (bench/handler.mjs): an
 * Int32Array whose element 0 counts the workers that loaded the handler, and whose element
 * `k * TALLY_STRIDE` counts the faults worker k (1, 2, ...) copied. One 64-byte cache line per
 * worker, so that counting shares none.
 */
export const TALLY_STRIDE = 16

/**
 * Reads byte 0 of pages `first .. first + warmup + count` of `u8`, the first `warmup` untimed, then
 * each of the next `count` timed with performance.now(). Returns nanoseconds per touch and the
 * number of bytes that were not `expect`.
 */
export function touchTimed(u8, pageSize, first, warmup, count, expect) {
  let bad = 0
  for (let i = 0; i < warmup; i++) if (u8[(first + i) * pageSize] !== expect) bad++
  const lat = new Float64Array(count)
  const base = first + warmup
  for (let i = 0; i < count; i++) {
    const offset = (base + i) * pageSize
    const t0 = performance.now()
    const v = u8[offset]
    const t1 = performance.now()
    lat[i] = t1 - t0
    if (v !== expect) bad++
  }
  // What the timing itself costs: the same timed reads of the pages, now mapped (median).
  const again = new Float64Array(count)
  for (let i = 0; i < count; i++) {
    const offset = (base + i) * pageSize
    const t0 = performance.now()
    const v = u8[offset]
    const t1 = performance.now()
    again[i] = t1 - t0
    if (v !== expect) bad++
  }
  again.sort()
  const residentNs = again[count >> 1] * 1e6
  return { latNs: Array.from(lat, (ms) => Math.round(ms * 1e6)), bad, residentNs: Math.round(residentNs) }
}

/** Reads byte 0 of pages `first .. first + count` (untimed); returns how many were not `expect`. */
export function touch(u8, pageSize, first, count, expect) {
  let bad = 0
  for (let i = 0; i < count; i++) if (u8[(first + i) * pageSize] !== expect) bad++
  return bad
}

/** Nearest-rank percentile (p in 0..100) of an array sorted ascending. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]
}

/** `text` parsed as JSON, or undefined if it is not JSON (a line of a child's output). */
export function safeJson(text) {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return Number.NaN
  const mid = v.length >> 1
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2
}

/** p50, p99, mean, min and max of latencies in nanoseconds. */
export function latencySummary(latNs) {
  const sorted = Float64Array.from(latNs).sort()
  let sum = 0
  for (const x of sorted) sum += x
  return {
    n: sorted.length,
    p50Ns: percentile(sorted, 50),
    p99Ns: percentile(sorted, 99),
    meanNs: sorted.length ? sum / sorted.length : Number.NaN,
    minNs: sorted[0],
    maxNs: sorted[sorted.length - 1],
  }
}
