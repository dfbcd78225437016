// Bun worker: reads the offsets of a shared region when asked (writing a byte there first, if told
// to); its reads and writes are faults from another thread.
import { Region, type SharedRegion } from 'userfaultfd'

declare const self: Worker

self.onmessage = (event: MessageEvent<{ shared: SharedRegion; offsets: number[]; write?: number }>) => {
  const { shared, offsets, write } = event.data
  const region = Region.attach(shared)
  const bytes = new Uint8Array(region.buffer)
  self.postMessage(
    offsets.map((offset) => {
      if (write !== undefined) bytes[offset] = write
      return bytes[offset]
    }),
  )
}
