// Shared by the Bun suites: a time limit that turns a hang into a failure, and a Bun worker that
// touches a region (its reads and writes are faults from another thread): Runtime.touch of bun/cases.ts.
import type { Region } from 'userfaultfd'

export const LIMIT_MS = 15_000

export function within<T>(promise: Promise<T>, what: string): Promise<T> {
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in time`)), LIMIT_MS)),
  ])
}

/** A worker that reads `offsets` of the region (after writing `write` there, if given): the bytes it read, and the worker to terminate. */
export function readInWorker(region: Region, offsets: number[], write?: number): { bytes: Promise<number[]>; worker: Worker } {
  const worker = new Worker(new URL('./toucher.ts', import.meta.url).href)
  const bytes = new Promise<number[]>((resolve, reject) => {
    worker.onmessage = (event) => resolve(event.data)
    worker.onerror = (event) => reject(new Error(event.message))
  })
  worker.postMessage({ shared: region.share(), offsets, write })
  return { bytes: within(bytes, 'the toucher worker'), worker }
}
