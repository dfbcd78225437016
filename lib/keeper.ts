// The keeper: a small process of its own that holds the VMs a Firecracker server serves (a copy
// of each one's userfaultfd, connection and pidfd), so that a server killed or upgraded and
// started again takes them back (crates/uffd-core/src/keeper.rs). A server links to the keeper
// at a path, starting one there if none listens.
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import type { BindingKeeper } from './binding'
import { call, UffdError } from './errors'
import { binding } from './loader'

/** How long a keeper with no server keeps its VMs before it kills them, unless told. */
export const DEFAULT_KEEPER_GRACE_MS = 10_000

/** How long a keeper linked to another server is asked again (that server may be ending). */
const BUSY_MS = 3000

/** How long a keeper just started may take to listen. */
const START_MS = 10_000

/** @internal Links to the keeper at `path`, starting one (with `graceMs`) if none listens there. */
export async function linkKeeper(path: string, graceMs: number): Promise<BindingKeeper> {
  let first = tryLink(path)
  // The server this one replaces may be on its way out (a hand-over): its link goes with it.
  for (const deadline = Date.now() + BUSY_MS; first instanceof UffdError && first.code === 'EBUSY' && Date.now() < deadline; ) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    first = tryLink(path)
  }
  if (!(first instanceof UffdError)) return first
  if (!absent(first)) throw first
  const started = startKeeper(path, graceMs)
  const deadline = Date.now() + START_MS
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 10))
    // Another server's keeper may have won the race to the path (ours then ends): linking to it is as good.
    const linked = tryLink(path)
    if (!(linked instanceof UffdError)) return linked
    const ended = started.ended()
    if (!absent(linked) || ended !== undefined || Date.now() > deadline) {
      throw new UffdError(`the keeper at ${path} could not be started${ended ? `: ${ended}` : ''}`, {
        code: linked.code,
        errno: linked.errno,
        syscall: linked.syscall,
        cause: linked,
      })
    }
  }
}

function tryLink(path: string): BindingKeeper | UffdError {
  try {
    return call(() => binding.BindingKeeper.connect(path))
  } catch (error) {
    if (error instanceof UffdError) return error
    throw error
  }
}

/** No keeper listens there (yet). */
function absent(error: UffdError): boolean {
  return error.syscall === 'connect' && (error.code === 'ENOENT' || error.code === 'ECONNREFUSED')
}

/** Starts a keeper process of its own (not this one's child in any way that ends with it). */
function startKeeper(path: string, graceMs: number): { ended(): string | undefined } {
  const child = spawn(process.execPath, [join(__dirname, 'keeper-main.js'), path, String(graceMs)], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let said = ''
  let ended: string | undefined
  child.stderr?.on('data', (chunk: Buffer) => {
    said += chunk.toString()
  })
  child.on('exit', (code, signal) => {
    ended = said.trim() || `it exited with ${signal ?? `code ${code}`}`
  })
  child.on('error', (error) => {
    ended = error.message
  })
  child.unref()
  // Its stderr is read only while it starts: a keeper that runs on does not hold this process.
  ;(child.stderr as { unref?: () => void } | null)?.unref?.()
  return { ended: () => ended }
}

/** Runs a keeper at `path` in this process until it ends (for `userfaultfd keeper` and a keeper started by a server). */
export function runKeeper(path: string, graceMs: number): void {
  call(() => binding.runKeeper(path, graceMs))
}
