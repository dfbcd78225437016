// How the benchmark runner (run.mjs) and its scenarios (scenarios/) write figures: times, rates,
// ratios, the pinnings' names, markdown tables and a failed row's cells.

/** The pinnings a measurement runs under, as the tables name them. */
export const PIN_NAMES = { same: 'pinned: every thread on CPU 0', none: 'unpinned' }

export function us(ns) {
  if (!Number.isFinite(ns)) return '-'
  return ns >= 100_000 ? `${(ns / 1000).toFixed(0)} us` : `${(ns / 1000).toFixed(1)} us`
}
export function time(ns) {
  if (!Number.isFinite(ns)) return '-'
  if (ns >= 1e9) return `${(ns / 1e9).toFixed(2)} s`
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(1)} ms`
  return `${(ns / 1e3).toFixed(0)} us`
}
export function rate(x) {
  if (!Number.isFinite(x)) return '-'
  return x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : `${(x / 1e3).toFixed(1)}k`
}
export function ratio(x) {
  return Number.isFinite(x) ? `${x.toFixed(2)}x` : '-'
}

export function markdownTable(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n')
}

export function failedCell(s) {
  return s.ok === 0 ? `FAILED (${s.failed}/${s.reps}): ${s.errors[0]}` : ''
}

export function note(s) {
  const parts = []
  if (s.failed && s.ok) parts.push(`${s.failed}/${s.reps} reps failed: ${s.errors[0]}`)
  return parts.join('; ')
}

/** The first line of an error's text that is not blank. */
export function firstLine(text) {
  return (
    String(text ?? '')
      .split('\n')
      .find((l) => l.trim()) ?? 'unknown error'
  )
}
