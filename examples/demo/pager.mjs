// The fault handler of the demo, run in the worker that uffd.handleInWorker() starts. Each fault is
// served with `chunkPages` pages of the data set from the faulting page on (readahead), generated
// into one reusable buffer; fault.copy() maps them and wakes the reader.
import { workerData } from 'node:worker_threads'
import { fill } from './dataset.mjs'

const { seed = 0, chunkPages = 16 } = workerData ?? {}
let chunk // Uint32Array of chunkPages pages, allocated at the first fault (when the page size is known)

export default function serve(fault) {
  const { region, offset } = fault
  chunk ??= new Uint32Array((chunkPages * region.pageSize) / 4)
  // Generate only what lies inside the region: fault.copy() would clip the rest anyway.
  const bytes = Math.min(chunk.byteLength, region.size - offset)
  const words = bytes === chunk.byteLength ? chunk : chunk.subarray(0, bytes / 4)
  fill(words, offset, seed)
  // Returns the bytes mapped: 0 (or fewer) if some of these pages were mapped already.
  fault.copy(words)
}
