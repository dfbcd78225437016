// What the Firecracker tests share: memory files of known bytes, the C stand-in VM (vm-peer.c, which
// keeps its copy of the userfaultfd after sending it, as Firecracker does), other connections made
// from a child process, and the server's events.
import { execFileSync } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FirecrackerServer, UffdError, VmSummary } from 'userfaultfd'
import { root, spawnCollecting, within } from './harness'

export const PAGE = 4096

/** Page `p` of a memory image: bytes that differ from page to page, and from `seed` to seed. */
export function pageOf(p: number, size: number, seed = 0): Buffer {
  const bytes = Buffer.alloc(size)
  for (let i = 0; i < size; i += 8) bytes.writeUInt32LE((p * 2654435761 + i * 40503 + seed * 97 + 1) >>> 0, i)
  return bytes
}

/** A folder for one test file, with the stand-in VM built in it; `remove()` in `test.after.always`. */
export function vmKit(prefix: string) {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const peerBinary = join(dir, 'vm-peer')
  execFileSync('cc', ['-O2', '-Wall', '-o', peerBinary, join(root, '__test__', 'helpers', 'vm-peer.c')])
  let sockets = 0
  return {
    dir,
    remove: () => rmSync(dir, { recursive: true, force: true }),
    socketPath: () => join(dir, `fc-${sockets++}.sock`),
    /** A memory file of `pages` pages; only the pages `has(p)` are written (the rest are holes). */
    memoryFile(name: string, pages: number, size = PAGE, seed = 0, has: (p: number) => boolean = () => true): string {
      const path = join(dir, name)
      const fd = openSync(path, 'w')
      for (let p = 0; p < pages; p++) if (has(p)) writeSync(fd, pageOf(p, size, seed), 0, size, p * size)
      closeSync(fd)
      execFileSync('truncate', ['-s', String(pages * size), path])
      return path
    },
    /** The stand-in VM: it checks every byte it reads against `expected` (see vm-peer.c for `args`). */
    startPeer(socket: string, expected: string, pages: number, args: string[] = []) {
      return spawnCollecting(peerBinary, [socket, expected, String(pages), ...args], 'the VM peer', 60_000)
    },
  }
}

/**
 * A child process that connects to `socket` and prints `connected`; then, `'silent'`, says nothing, or,
 * `'probe'`, closes the connection (a liveness probe); it lives on for `holdMs` and exits 0 (a kill shows
 * as its signal).
 */
export function connection(socket: string, how: 'silent' | 'probe', holdMs: number) {
  const script = `const s = require('node:net').connect(process.argv[1])
s.on('connect', () => { console.log('connected'); ${how === 'probe' ? 's.end()' : ''} })
s.on('error', (e) => console.log(e.code))
setTimeout(() => process.exit(0), Number(process.argv[2]))`
  return spawnCollecting(process.execPath, ['-e', script, socket, String(holdMs)], `a ${how} connection`, 60_000)
}

export function nextSummary(server: FirecrackerServer, ms = 60_000): Promise<VmSummary> {
  return within(new Promise((resolve) => server.once('summary', resolve)), 'a summary', ms)
}

export function errorsOf(server: FirecrackerServer): UffdError[] {
  const errors: UffdError[] = []
  server.on('error', (error) => errors.push(error))
  return errors
}

export function closed(server: FirecrackerServer, ms = 60_000): Promise<void> {
  return within(new Promise<void>((resolve) => server.once('close', () => resolve())), 'the close', ms)
}
