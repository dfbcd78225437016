// Runs a scenario of scenario-child.js in its own process: what a script does on its own, from its
// start to its end (does it end, what does it print), with a generous bound on its time.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'

export interface Run {
  status: number | null
  signal: NodeJS.Signals | null
  ms: number
  lines: Array<Record<string, unknown>>
  stderr: string
}

/** Runs a scenario of scenario-child.js in its own process, with a generous bound on its time. */
export function runChild(scenario: string, arg?: string, prefix: string[] = []): Run {
  const [command, ...args] = [...prefix, process.execPath, join(__dirname, 'scenario-child.js'), scenario, ...(arg ? [arg] : [])]
  const started = Date.now()
  const result = spawnSync(command as string, args, { encoding: 'utf8', timeout: 60_000, cwd: join(__dirname, '..', '..', '..', '..') })
  const lines = result.stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
  return { status: result.status, signal: result.signal, ms: Date.now() - started, lines, stderr: result.stderr }
}
