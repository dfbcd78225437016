// The handler module of the handleInWorker tests: what it does with a fault is set by workerData.
import { workerData } from 'node:worker_threads'
import type { Fault } from 'userfaultfd'
import { patternPage } from './harness'

interface Settings {
  mode: 'copy' | 'zero' | 'continue' | 'throw' | 'none' | 'never' | 'spin'
  seed?: number
}

export default function pager(fault: Fault): void | Promise<void> {
  const { mode, seed = 0 } = workerData as Settings
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
