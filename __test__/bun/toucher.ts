// Bun worker: reads the offsets of a shared region when asked; its reads are faults from another thread.
import { Region, type SharedRegion } from 'userfaultfd'

declare const self: Worker

self.onmessage = (event: MessageEvent<{ shared: SharedRegion; offsets: number[] }>) => {
  const region = Region.attach(event.data.shared)
  const bytes = new Uint8Array(region.buffer)
  self.postMessage(event.data.offsets.map((offset) => bytes[offset]))
}
