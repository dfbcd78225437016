// The fault handler that bench/child.mjs installs with `uffd.handleInWorker()`: it runs in a
// worker thread the package starts, and resolves each fault with one page of FILL bytes (COPY),
// the zero page (ZEROPAGE) or the page cache (CONTINUE), as `workerData.op` says.
//
// With `workerData.tally` (a SharedArrayBuffer, the scaling scenario), each worker that loads this
// module takes a slot and counts there the faults it copies: the runner learns how many handler
// workers a build started, whatever the build reports, and how the faults were shared among them.
import { workerData } from 'node:worker_threads'
import { TALLY_STRIDE } from './common.mjs'

const { op = 'copy', fill = 0x5a, tally } = workerData ?? {}
let page

function copy(fault) {
  if (page?.length !== fault.region.pageSize) page = new Uint8Array(fault.region.pageSize).fill(fill)
  fault.copy(page)
}

function zero(fault) {
  fault.zero()
}

function minor(fault) {
  fault.continue()
}

/** `copy`, counting each fault in this worker's slot of the tally (its layout: TALLY_STRIDE in common.mjs). */
function counted() {
  const counts = new Int32Array(tally)
  const slot = Atomics.add(counts, 0, 1) + 1
  if ((slot + 1) * TALLY_STRIDE > counts.length) return copy // more workers than slots: loaded, not counted
  const at = slot * TALLY_STRIDE
  return (fault) => {
    copy(fault)
    Atomics.add(counts, at, 1)
  }
}

export default tally ? counted() : ({ zero, continue: minor }[op] ?? copy)
