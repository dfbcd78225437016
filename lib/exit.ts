// The process's way out: on the main thread's exit every userfaultfd of the process is closed,
// after each live owner has said what it had not heard yet.
import { isMainThread } from 'node:worker_threads'
import { binding } from './loader'

/** The method the exit calls on each live owner (a symbol: not part of the public API). */
export const sayAtExit = Symbol('sayAtExit')

/** A userfaultfd that owns its fd, as the exit sees it. */
export interface Owner {
  [sayAtExit](): void
}

/** The owners of this thread, whose last words the exit must not lose (held weakly). */
const owners = new Set<WeakRef<Owner>>()
let sweepOwnersAt = 64
let closesOnExit = false

/** Remembers an owner until `forgetOwner`, or until it is collected. */
export function rememberOwner<T extends Owner>(owner: T): WeakRef<T> {
  const ref = new WeakRef(owner)
  owners.add(ref)
  if (owners.size >= sweepOwnersAt) {
    for (const known of owners) if (known.deref() === undefined) owners.delete(known)
    sweepOwnersAt = Math.max(64, 2 * owners.size)
  }
  return ref
}

export function forgetOwner(ref: WeakRef<Owner>): void {
  owners.delete(ref)
}

/**
 * On the main thread's way out (the end of the script, `process.exit()`), every userfaultfd of
 * the process is closed: closing wakes every thread asleep in a fault, so no worker being stopped
 * waits for a handler that will not come. Every handshake under way is stopped too: the exit
 * waits for the pool threads they wait on.
 */
export function closeAllOnExit(): void {
  if (closesOnExit || !isMainThread) return
  closesOnExit = true
  process.once('exit', () => {
    for (const owner of owners) owner.deref()?.[sayAtExit]()
    binding.closeAllUserfaultfds()
  })
}
