// The summaries of run.mjs's measurements: per scenario, pinning and row, the medians over the
// repetitions, and how the tables find a row's summary and the one its ratios are to.
import { median } from './common.mjs'
import { firstLine } from './format.mjs'

/** Per scenario, pinning and row: medians over the repetitions that succeeded. */
export function summarize(measurements, definitions) {
  const groups = new Map()
  for (const m of measurements) {
    const key = `${m.scenario}\u0000${m.pin}\u0000${m.contender}`
    if (!groups.has(key)) groups.set(key, { scenario: m.scenario, pin: m.pin, contender: m.contender, label: m.label, runs: [] })
    groups.get(key).runs.push(m)
  }
  const summaries = []
  for (const g of groups.values()) {
    const ok = g.runs.filter((r) => r.ok)
    const failed = g.runs.filter((r) => !r.ok && !r.unsupported)
    const unsupported = g.runs.find((r) => r.unsupported)?.unsupported
    const row = rowDef(definitions, g.scenario, g.contender)
    const metrics = {}
    const spread = {}
    for (const name of Object.keys(ok[0]?.metrics ?? {})) {
      const values = ok.map((r) => r.metrics[name]).filter((v) => Number.isFinite(v))
      if (!values.length) continue
      metrics[name] = median(values)
      spread[name] = [Math.min(...values), Math.max(...values)]
    }
    summaries.push({
      scenario: g.scenario,
      pin: g.pin,
      contender: g.contender,
      label: g.label,
      reps: g.runs.length,
      ok: ok.length,
      failed: failed.length,
      errors: [...new Set(failed.map((r) => firstLine(r.error)))],
      ...(unsupported ? { unsupported } : {}),
      ...(row?.threads === undefined ? {} : { threads: row.threads }),
      ...(row?.readers === undefined ? {} : { readers: row.readers }),
      metrics,
      spread,
    })
  }
  return summaries
}

/** The row `id` of a scenario's definitions. */
export function rowDef(definitions, scenario, id) {
  for (const contender of definitions[scenario].contenders) for (const row of contender.rows) if (row.id === id) return row
  return undefined
}

/** The summary of a row under a pinning. */
export function find(summaries, scenario, pin, contender) {
  return summaries.find((s) => s.scenario === scenario && s.pin === pin && s.contender === contender)
}

/** The summary a row's ratios are to: its `ref` row, else the scenario's base contender. */
export function refOf(definitions, summaries, s) {
  const def = definitions[s.scenario]
  const ref = rowDef(definitions, s.scenario, s.contender)?.ref ?? def.base
  return ref === undefined ? undefined : find(summaries, s.scenario, s.pin, ref)
}
