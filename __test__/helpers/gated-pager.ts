// A handleInWorker module that holds every fault until the test opens a gate: workerData.gate is
// an Int32Array over a SharedArrayBuffer; [0] is the gate (0 shut, 1 open), [1] counts the faults
// held. Each fault is then served with the tests' pattern (seed workerData.seed).
import { workerData } from 'node:worker_threads'
import type { Fault } from 'userfaultfd'
import { patternPage } from './harness'

const { gate, seed = 0 } = workerData as { gate: Int32Array; seed?: number }

type WaitAsync = (array: Int32Array, index: number, value: number) => { async: boolean; value: Promise<string> | string }

async function opened(): Promise<void> {
  while (Atomics.load(gate, 0) === 0) {
    // Atomics.waitAsync is ES2024, newer than the lib the tests compile against.
    const wait = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync(gate, 0, 0)
    if (wait.async) await wait.value
  }
}

export default async function gatedPager(fault: Fault): Promise<void> {
  Atomics.add(gate, 1, 1)
  await opened()
  fault.copy(patternPage(fault.offset, fault.region.pageSize, 1, seed))
}
