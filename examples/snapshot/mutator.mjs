// The mutator thread: it attaches the region and, for each round it is told to run, writes into
// random pages, then reports which pages it wrote. With WP_ASYNC the kernel lifts each page's
// write-protection itself on its first write and marks it dirty: no fault reaches any handler.
import { parentPort, workerData } from 'node:worker_threads'
import { Region } from 'userfaultfd'

const region = Region.attach(workerData.shared)
const memory = new Uint8Array(region.buffer)
const pages = region.size / region.pageSize
let state = workerData.seed >>> 0 || 1
const random = () => {
  state ^= state << 13
  state ^= state >>> 17
  state ^= state << 5
  return (state >>> 0) / 2 ** 32
}

parentPort.on('message', ({ round, writes }) => {
  if (round === undefined) {
    region.close() // a view: lets go of its buffer only
    parentPort.close()
    return
  }
  const written = new Set()
  for (let n = 0; n < writes; n++) {
    const page = Math.floor(random() * pages)
    const at = page * region.pageSize + Math.floor(random() * region.pageSize)
    const length = Math.min(1 + Math.floor(random() * 64), (page + 1) * region.pageSize - at)
    memory.fill((round * 37 + n) & 0xff, at, at + length)
    written.add(page * region.pageSize)
  }
  parentPort.postMessage({ round, written: [...written] })
})
