// The handler module of the handleInWorker tests: what it does with a fault is set by workerData.
import { workerData } from 'node:worker_threads'
import type { Fault } from 'userfaultfd'
import { patternPage } from './harness'

interface Settings {
  mode: 'copy' | 'zero' | 'continue' | 'throw' | 'none' | 'never' | 'spin'
  seed?: number
  /** Shared counts: [0] workers that loaded this module, [1 + n] faults worker n handled. */
  tally?: Int32Array
}

const tally = (workerData as Settings | undefined)?.tally
const slot = tally ? Atomics.add(tally, 0, 1) : 0

export default function pager(fault: Fault): void | Promise<void> {
  const { mode, seed = 0 } = workerData as Settings
  if (tally) Atomics.add(tally, 1 + slot, 1)
  switch (mode) {
    case 'copy':
      fault.copy(patternPage(fault.offset, fault.region.pageSize, 1, seed))
      return
    case 'zero':
      fault.zero()
      return
    case 'continue':
      fault.continue()
      return
    case 'throw':
      throw new Error('the pager failed on purpose')
    case 'none':
      return
    case 'never':
      return new Promise(() => {})
    case 'spin':
      // Stuck in synchronous work: this thread never reads the userfaultfd again.
      for (;;) {}
  }
}
