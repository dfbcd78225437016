// A worker thread that touches memory (reads or writes bytes of a region) on request, so that it
// faults, and posts the bytes back: the Toucher of harness.ts.
import { parentPort } from 'node:worker_threads'
import { Region, type SharedRegion } from 'userfaultfd'

parentPort?.on(
  'message',
  (request: { shared: SharedRegion; offsets: number[]; write?: number; discard?: { offset: number; times: number } }) => {
    try {
      const region = Region.attach(request.shared)
      // Discard a page over and over: with EVENT_REMOVE each discard is an event the loop must read.
      for (let i = 0; i < (request.discard?.times ?? 0); i++) region.discard(request.discard?.offset ?? 0, region.pageSize)
      const bytes = new Uint8Array(region.buffer)
      const read = request.offsets.map((offset) => {
        if (request.write !== undefined) bytes[offset] = request.write
        return bytes[offset] as number
      })
      parentPort?.postMessage({ bytes: read })
    } catch (error) {
      parentPort?.postMessage({ error: String(error) })
    }
  },
)
