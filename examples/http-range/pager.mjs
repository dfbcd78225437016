// The fault handler, run in the worker that uffd.handleInWorker() starts. It is async: each fault
// fetches a 64 KiB chunk from the faulting page on (clipped to the region) with a Range request,
// and while the response is on its way, the worker takes the next faults, so many are in flight.
import { workerData } from 'node:worker_threads'

const { url, chunkBytes = 64 * 1024 } = workerData

export default async function serve(fault) {
  const { offset, region } = fault
  const end = Math.min(offset + chunkBytes, region.size) - 1
  const res = await fetch(url, { headers: { Range: `bytes=${offset}-${end}` } })
  if (res.status !== 206) throw new Error(`GET ${url} bytes=${offset}-${end}: HTTP ${res.status}`)
  // Maps the whole chunk (readahead); returns fewer bytes if some of its pages were mapped already.
  fault.copy(new Uint8Array(await res.arrayBuffer()))
}
