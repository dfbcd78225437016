// The child processes of run.mjs: running one (its stdout line by line, killed after a timeout),
// killing those still running, and the progress of the measurements on stderr.
import { spawn } from 'node:child_process'

const running = new Set()

/** Runs a command in `cwd`; calls onLine for each line of stdout; kills it (by its pid) after timeoutMs. */
export function runProcess(cmd, argv, { cwd, timeoutMs, onLine }) {
  return new Promise((resolvePromise) => {
    const child = spawn(cmd, argv.map(String), { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    running.add(child)
    let stdout = ''
    let stderr = ''
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (data) => {
      stdout += data
      let nl = stdout.indexOf('\n')
      while (nl >= 0) {
        const line = stdout.slice(0, nl)
        stdout = stdout.slice(nl + 1)
        if (line.trim()) onLine(line)
        nl = stdout.indexOf('\n')
      }
    })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (data) => {
      stderr = (stderr + data).slice(-4000)
    })
    const finish = (code, signal, spawnError) => {
      clearTimeout(timer)
      running.delete(child)
      if (stdout.trim()) onLine(stdout)
      stdout = ''
      resolvePromise({ code, signal, stderr: stderr.trim(), timedOut, spawnError })
    }
    child.on('error', (error) => finish(null, null, error))
    child.on('close', (code, signal) => finish(code, signal))
  })
}

/** Kills every child process still running (on SIGINT and SIGTERM). */
export function stopChildren() {
  for (const child of running) child.kill('SIGKILL')
}

/**
 * Progress on stderr over `total` rows: a bar on a terminal (cli-progress, when installed), else one
 * line per measurement.
 */
export async function makeProgress(total) {
  let done = 0
  if (process.stderr.isTTY) {
    try {
      const { default: cliProgress } = await import('cli-progress')
      const multi = new cliProgress.MultiBar(
        {
          stream: process.stderr,
          format: ' {bar} {value}/{total} | {duration_formatted} | {label}',
          hideCursor: true,
          clearOnComplete: true,
          etaBuffer: 50,
        },
        cliProgress.Presets.shades_classic,
      )
      const bar = multi.create(total, 0, { label: 'starting' })
      return {
        start: (label) => bar.update(done, { label }),
        tick: (_line, failed) => {
          done++
          bar.update(done)
          if (failed) multi.log(`${failed}\n`)
        },
        stop: () => multi.stop(),
      }
    } catch {
      // cli-progress is a devDependency: without it, one line per measurement.
    }
  }
  const width = String(total).length
  return {
    start: () => {},
    tick: (line, failed) => {
      done++
      process.stderr.write(`[${String(done).padStart(width)}/${total}] ${line}\n`)
      if (failed) process.stderr.write(`${failed}\n`)
    },
    stop: () => {},
  }
}
