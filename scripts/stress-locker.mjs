// A locking thread of scripts/stress.mjs: takes the lock that lives in a random (or the next) page
// of registered memory, increments the page's counter and its verify copy, and pauses when told.
import { workerData } from 'node:worker_threads'
import { Region } from 'userfaultfd'

const { shared, verify, control, operations, pages, page, index } = workerData
const memory = new Int32Array(Region.attach(shared).buffer)
let seed = index * 7919 + 1
let next = index
for (;;) {
  const state = Atomics.load(control, 0)
  if (state !== 0) {
    Atomics.add(control, 1, 1)
    if (state === 2) break
    Atomics.wait(control, 0, 1)
    continue
  }
  seed = (seed * 1103515245 + 12345) & 0x7fffffff
  next = (next + 1) % pages
  // Even threads walk at random, odd ones in sequence.
  const p = index % 2 === 0 ? seed % pages : next
  const lock = (p * page) / 4
  // The lock word is in the page: taking it is the fault when the page is missing.
  while (Atomics.compareExchange(memory, lock, 0, 1) !== 0) {}
  memory[lock + 1]++
  Atomics.add(verify, p, 1)
  Atomics.store(memory, lock, 0)
  Atomics.add(operations, 0, 1n)
}
