// A reader thread: it attaches the region, says it is ready, and on 'go' reads its part byte by
// byte, comparing with the expected data. Each first touch of a page that is not there sleeps until
// the pager maps it.
import { once } from 'node:events'
import { performance } from 'node:perf_hooks'
import { parentPort, workerData } from 'node:worker_threads'
import { Region } from 'userfaultfd'

const { shared, expected, start, end } = workerData
const region = Region.attach(shared)
const memory = new Uint8Array(region.buffer)
const want = new Uint8Array(expected)
parentPort.postMessage({ type: 'ready' })
await once(parentPort, 'message')
const t0 = performance.now()
let mismatches = 0
let firstBad = -1
for (let i = start; i < end; i++) {
  if (memory[i] !== want[i]) {
    if (firstBad < 0) firstBad = i
    mismatches++
  }
}
const ms = performance.now() - t0
region.close() // a view: lets go of its buffer only
parentPort.postMessage({ type: 'done', start, end, mismatches, firstBad, ms })
