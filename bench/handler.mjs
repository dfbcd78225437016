// The fault handler that bench/child.mjs installs with `uffd.handleInWorker()`: it runs in a
// worker thread the package starts, and resolves each fault with one page of FILL bytes (COPY),
// the zero page (ZEROPAGE) or the page cache (CONTINUE), as `workerData.op` says.
import { workerData } from 'node:worker_threads'

const { op = 'copy', fill = 0x5a } = workerData ?? {}
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

export default { zero, continue: minor }[op] ?? copy
