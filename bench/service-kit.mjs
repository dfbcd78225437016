// The restore-service bench's kit (bench/service.mjs): a server of `userfaultfd firecracker` and
// its JSON lines as they come, a stand-in VM run to its end, and what /proc says of a process.
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { percentile } from './common.mjs'

export function parseLine(text) {
  try {
    return JSON.parse(text)
  } catch {
    return { text }
  }
}

/** Lines of a child's stdout, parsed as JSON, as they come; `next(pred)` waits for one. */
export function lineReader(stream) {
  const lines = []
  const waiters = []
  let rest = ''
  stream.on('data', (chunk) => {
    rest += chunk
    for (let at = rest.indexOf('\n'); at >= 0; at = rest.indexOf('\n')) {
      const line = parseLine(rest.slice(0, at))
      rest = rest.slice(at + 1)
      lines.push(line)
      for (const waiter of [...waiters]) if (waiter.test(line)) waiter.resolve(line)
    }
  })
  return {
    lines,
    /** The first line from index `from` on that `test` accepts, within `ms`. */
    next(test, ms, from = 0) {
      const seen = lines.slice(from).find(test)
      if (seen) return Promise.resolve(seen)
      return new Promise((resolveLine, reject) => {
        const waiter = {
          test,
          resolve: (line) => {
            clearTimeout(timer)
            waiters.splice(waiters.indexOf(waiter), 1)
            resolveLine(line)
          },
        }
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1)
          reject(new Error(`no such line within ${ms} ms`))
        }, ms)
        waiters.push(waiter)
      })
    },
  }
}

/** `node CLI firecracker --socket SOCKET --mem MEM ...args`, once it says it is listening. */
export async function startServer(cli, socket, mem, args = []) {
  const child = spawn(process.execPath, [cli, 'firecracker', '--socket', socket, '--mem', mem, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout.setEncoding('utf8')
  const reader = lineReader(child.stdout)
  let stderr = ''
  child.stderr.on('data', (chunk) => {
    stderr += chunk
  })
  const exited = new Promise((resolveExit) => child.on('exit', (code, signal) => resolveExit({ code, signal })))
  const listening = reader.next((line) => line.event === 'listening', 30_000)
  const first = await Promise.race([listening, exited.then((how) => ({ exited: how }))])
  if (first.exited)
    throw new Error(
      `the server exited before listening (${JSON.stringify(first.exited)}): ${stderr}${reader.lines.map((l) => JSON.stringify(l)).join('\n')}`,
    )
  return {
    child,
    socket,
    pid: child.pid,
    lines: reader.lines,
    next: reader.next,
    exited,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      const how = await exited
      clearTimeout(timer)
      return how
    },
  }
}

/** One stand-in VM (the built bench/service-peer.c at `peer`), to its end: its JSON line and exit code. */
export function runPeer(peer, socket, mem, pages, ms = 60_000) {
  return new Promise((resolveRun) => {
    const child = spawn(peer, [socket, mem, String(pages)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (chunk) => {
      out += chunk
    })
    child.stderr.on('data', (chunk) => {
      err += chunk
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), ms)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      const last = out.trim().split('\n').pop() ?? ''
      resolveRun({ code, signal, result: last ? parseLine(last) : undefined, stderr: err })
    })
  })
}

/** A process's threads, fds, mappings and RSS, from /proc; undefined once it is gone. */
export function proc(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    return {
      threads: readdirSync(`/proc/${pid}/task`).length,
      fds: readdirSync(`/proc/${pid}/fd`).length,
      maps: readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n').length,
      rssKiB: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]),
    }
  } catch {
    return undefined
  }
}

/** The count, p50, p90, min and max of `xs`. */
export const stats = (xs) => {
  const sorted = [...xs].sort((a, b) => a - b)
  return { n: sorted.length, p50: percentile(sorted, 50), p90: percentile(sorted, 90), max: sorted[sorted.length - 1], min: sorted[0] }
}
