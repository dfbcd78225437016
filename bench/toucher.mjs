// A worker thread of bench/child.mjs that takes the page faults while the handler runs on the
// main thread (`uffd.handle()` there). It attaches the region by its token and either
//  - 'latency': reads `warmup` pages untimed, then `count` pages each timed with performance.now(),
//  - 'throughput': reads `warmup` pages, says 'ready', waits for the start flag, reads `count`
//    pages, and reports when it finished (process.hrtime, comparable across threads).
import { parentPort, workerData } from 'node:worker_threads'
import { Region } from 'userfaultfd'
import { touch, touchTimed } from './common.mjs'

const { kind, region: token, first = 0, warmup, count, expect, flag } = workerData
const region = Region.attach(token)
const u8 = new Uint8Array(region.buffer)
const pageSize = region.pageSize
try {
  if (kind === 'latency') {
    const result = touchTimed(u8, pageSize, first, warmup, count, expect)
    parentPort.postMessage({ type: 'done', ...result })
  } else if (kind === 'throughput') {
    let bad = touch(u8, pageSize, first, warmup, expect)
    const start = new Int32Array(flag)
    parentPort.postMessage({ type: 'ready' })
    Atomics.wait(start, 0, 0)
    bad += touch(u8, pageSize, first + warmup, count, expect)
    const end = process.hrtime.bigint()
    parentPort.postMessage({ type: 'done', end: String(end), bad })
  } else {
    throw new Error(`unknown toucher kind ${kind}`)
  }
} finally {
  region.close()
}
