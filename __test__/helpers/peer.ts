// The C test peer (helpers/peer.c), a stand-in for Firecracker: built once per test file with the
// system compiler, then started per test. It maps memory, registers it with its own userfaultfd,
// sends the fd in the handshake body of a Firecracker release, and (MODE serve) reads every page.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { join } from 'node:path'
import { within } from './harness'

/** The body forms of Firecracker's releases (page sizes in bytes), as peer.c's FORM argument. */
export type PeerForm = '1.12+' | '1.7-1.11' | '1.0-1.6'

/** What the peer sends and maps: the body form (default 1.12+), a field no release sends yet, 2 MiB huge pages. */
export interface PeerOptions {
  form?: PeerForm
  unknown?: boolean
  huge?: boolean
}

export interface PeerExit {
  code: number | null
  signal: NodeJS.Signals | null
  /** What the peer printed, stdout and stderr. */
  out: string
}

export interface RunningPeer {
  child: ChildProcess
  /** The peer's end (its output complete), within the tests' time limit. */
  exit: Promise<PeerExit>
}

/** Compiles peer.c into `dir`; returns the binary's path. */
export function buildPeer(dir: string): string {
  const binary = join(dir, 'peer')
  execFileSync('cc', ['-O2', '-Wall', '-o', binary, join(__dirname, '..', '..', '..', '..', '__test__', 'helpers', 'peer.c')])
  return binary
}

/** Starts the peer: it connects to `socket` and sends its handshake; `pages` of its page size. */
export function startPeer(binary: string, socket: string, mode: string, pages: number, options: PeerOptions = {}): RunningPeer {
  const args = [socket, mode, String(pages), options.form ?? '1.12+']
  if (options.unknown) args.push('unknown')
  if (options.huge) args.push('huge')
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout?.on('data', (chunk) => {
    out += chunk
  })
  child.stderr?.on('data', (chunk) => {
    out += chunk
  })
  const exit = new Promise<PeerExit>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, out })))
  return { child, exit: within(exit, 'the peer process') }
}
