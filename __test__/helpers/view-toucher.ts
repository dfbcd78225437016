// A worker thread (node:worker_threads) that attaches a shared region and reads the first byte of
// each page: half of them, then, told to, the rest; then closes its view, or leaves it open and
// stays alive until terminated. Runtime.viewWorker of cases/ava.ts; Bun's is bun/view-toucher.ts.
import { parentPort, workerData } from 'node:worker_threads'
import { Region, type SharedRegion } from 'userfaultfd'

const { shared, pages, close } = workerData as { shared: SharedRegion; pages: number; close: boolean }
const view = Region.attach(shared)
const bytes = new Uint8Array(view.buffer)
const seen: number[] = []
for (let page = 0; page < pages / 2; page++) seen.push(bytes[page * view.pageSize] as number)
parentPort?.postMessage({ half: true })
parentPort?.once('message', () => {
  for (let page = pages / 2; page < pages; page++) seen.push(bytes[page * view.pageSize] as number)
  if (close) view.close()
  else setInterval(() => view, 1000) // stays alive, its view open, until terminated
  parentPort?.postMessage({ seen, closed: view.closed })
})
