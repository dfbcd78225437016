// The measurements of run.mjs: running a task (one child process: a baseline program, or
// bench/child.mjs with the package's contenders) and recording each of its rows, ok, failed or not
// supported by this build.
import { runProcess } from './children.mjs'
import { firstLine, rate, time, us } from './format.mjs'

/**
 * What runs the tasks and keeps their measurements: `baselines` the baseline programs that built (by
 * kind), `child` the path of bench/child.mjs, `cwd` the folder children run in, `warnings` the run's
 * warnings (pushed to), `progress` from makeProgress, `reps` the repetitions.
 */
export function measurer({ baselines, child, cwd, warnings, progress, reps }) {
  const measurements = []

  function describe(m) {
    if (m.unsupported) return 'not supported by this build'
    if (!m.ok) return 'FAILED'
    const x = m.metrics
    if (x.p50Ns !== undefined) return `p50 ${us(x.p50Ns)} p99 ${us(x.p99Ns)}`
    if (x.faultsPerSec !== undefined) return `${rate(x.faultsPerSec)} faults/s`
    if (x.mibPerSec !== undefined) return `${x.mibPerSec.toFixed(0)} MiB/s, first byte ${time(x.ttfbNs)}`
    if (x.residentMiB !== undefined) return `${x.residentMiB.toFixed(1)} MiB resident`
    return ''
  }

  /** Records one row's measurement; `unsupported` says why this build cannot run it (neither ok nor failed). */
  function record(task, row, ok, metrics, error, unsupported) {
    const m = { scenario: task.scenario, pin: task.pin, rep: task.rep, contender: row.id, label: row.label, ok, metrics, error }
    if (unsupported) m.unsupported = unsupported
    measurements.push(m)
    const line = `${task.scenario} ${task.pin === 'same' ? 'pinned' : 'unpinned'} rep ${task.rep + 1}/${reps} ${row.label}: ${describe(m)}`
    const failed =
      ok || unsupported ? undefined : `  ${task.scenario} ${row.label} (rep ${task.rep + 1}, ${task.pin}) failed: ${firstLine(error)}`
    progress.tick(line, failed)
  }

  // What this build cannot run, by a contender's `support` (see jsScaling): the reason a child gave.
  const unsupportedBy = new Map()

  function recordOutput(task, contender, raw, error) {
    if (raw?.unsupported) {
      if (contender.support) unsupportedBy.set(contender.support, raw.unsupported)
      for (const row of contender.rows) record(task, row, false, undefined, undefined, raw.unsupported)
      return
    }
    for (const row of contender.rows) {
      if (error !== undefined) {
        record(task, row, false, undefined, error)
        continue
      }
      try {
        record(task, row, true, row.extract(raw))
      } catch (extractError) {
        record(task, row, false, undefined, `unreadable result: ${extractError.message}`)
      }
    }
  }

  function exitText(result) {
    if (result.spawnError) return `could not start: ${result.spawnError.message}`
    if (result.timedOut) return 'timed out and was killed'
    if (result.signal) return `killed by ${result.signal}`
    return `exited with code ${result.code}`
  }

  async function runTask(task) {
    const all = task.contenders.map((c) => c.rows.map((r) => r.label).join(', ')).join('; ')
    const labels = all.length > 60 ? `${all.slice(0, 57)}...` : all
    progress.start(`${task.scenario} ${task.pin === 'same' ? 'pinned' : 'unpinned'} rep ${task.rep + 1}/${reps}: ${labels}`)
    if (task.kind in baselines) {
      const [contender] = task.contenders
      const baseline = baselines[task.kind]
      const lines = []
      const result = await runProcess(baseline.bin, contender.args(task.pin), { timeoutMs: 120_000, onLine: (l) => lines.push(l), cwd })
      let raw
      try {
        raw = JSON.parse(lines.join('\n'))
      } catch {
        raw = undefined
      }
      if (result.code !== 0 || !raw?.ok) {
        const detail = [exitText(result), result.stderr].filter(Boolean).join(': ')
        return recordOutput(task, contender, undefined, `${baseline.name} ${detail}`)
      }
      return recordOutput(task, contender, raw)
    }
    // What an earlier child found this build cannot run is not asked again.
    for (const contender of task.contenders.filter((c) => unsupportedBy.has(c.support))) {
      recordOutput(task, contender, { unsupported: unsupportedBy.get(contender.support) })
    }
    task.contenders = task.contenders.filter((c) => !unsupportedBy.has(c.support))
    if (task.contenders.length === 0) return
    const specs = task.contenders.map((contender, i) => ({ id: i, ...contender.spec() }))
    const seen = new Set()
    const argv = [child, JSON.stringify(specs)]
    const [cmd, fullArgv] = task.pin === 'same' ? ['taskset', ['-c', '0', process.execPath, ...argv]] : [process.execPath, argv]
    const result = await runProcess(cmd, fullArgv, {
      cwd,
      timeoutMs: 60_000 + 90_000 * specs.length,
      onLine: (line) => {
        let out
        try {
          out = JSON.parse(line)
        } catch {
          warnings.push(`${task.scenario}: a child printed a line that is not JSON: ${line.slice(0, 200)}`)
          return
        }
        const contender = task.contenders[out.id]
        if (!contender || seen.has(out.id)) return
        seen.add(out.id)
        recordOutput(task, contender, out, out.ok ? undefined : out.error)
      },
    })
    const unfinished = task.contenders.filter((_, i) => !seen.has(i))
    for (const contender of unfinished) {
      recordOutput(
        task,
        contender,
        undefined,
        `child process ${exitText(result)} before this measurement ended${result.stderr ? `\n${result.stderr}` : ''}`,
      )
    }
    if (unfinished.length === 0 && result.code !== 0) {
      warnings.push(
        `${task.scenario} (rep ${task.rep + 1}, ${task.pin}): the child ${exitText(result)} after its measurements: ${result.stderr}`,
      )
    } else if (result.stderr && unfinished.length === 0) {
      warnings.push(`${task.scenario} (rep ${task.rep + 1}, ${task.pin}): the child wrote on stderr: ${result.stderr.slice(0, 600)}`)
    }
  }

  return { measurements, runTask }
}
