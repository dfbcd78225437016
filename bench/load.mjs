// Is the machine idle? Other processes' CPU time skews every figure of run.mjs (wake-ups above
// all): the CPUs other processes kept busy over a second, and which processes.
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'

/** The kernel's clock ticks per second (/proc's CPU times count in them), read on first use. */
let clockTicks

function cpuSnapshot() {
  clockTicks ??= Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const processes = new Map()
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const close = stat.lastIndexOf(')')
      const rest = stat.slice(close + 2).split(' ')
      processes.set(pid, { comm: stat.slice(stat.indexOf('(') + 1, close), ticks: Number(rest[11]) + Number(rest[12]) })
    } catch {
      // The process ended meanwhile.
    }
  }
  return { idle: fields[3] + (fields[4] ?? 0), total: fields.reduce((a, b) => a + b, 0), processes, at: performance.now() }
}

/** CPUs kept busy by other processes over `ms`, and which processes. */
export async function measureLoad(cpus, ms = 1000) {
  const a = cpuSnapshot()
  await sleep(ms)
  const b = cpuSnapshot()
  const seconds = (b.at - a.at) / 1000
  const busyCpus = (1 - (b.idle - a.idle) / Math.max(1, b.total - a.total)) * cpus
  const busiest = []
  for (const [pid, p] of b.processes) {
    const before = a.processes.get(pid)
    if (!before || Number(pid) === process.pid) continue
    const share = (p.ticks - before.ticks) / clockTicks / seconds
    if (share >= 0.05) busiest.push({ pid: Number(pid), comm: p.comm, cpu: Math.round(share * 100) / 100 })
  }
  busiest.sort((x, y) => y.cpu - x.cpu)
  return { busyCpus: Math.round(busyCpus * 100) / 100, busiest }
}

/** Adds to `warnings` that the machine was not idle `when`, if `load` says so. */
export function loadWarning(warnings, cpus, when, load) {
  if (load.busyCpus < 0.15) return
  const who = load.busiest.map((p) => `pid ${p.pid} ${p.comm} ${Math.round(p.cpu * 100)}%`).join(', ')
  warnings.push(
    `the machine was not idle ${when}: ${load.busyCpus} of ${cpus} CPUs busy${who ? ` (${who})` : ''}; ` +
      'other load changes every figure here, cross-CPU wake-ups above all',
  )
}
