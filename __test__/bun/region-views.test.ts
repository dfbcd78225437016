// The owner closes a region while a Bun worker reads it through Region.attach: the view never
// reads zeros, and the region is unregistered once the view closes.
import { expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { regionCases } from '../cases/regions'
import { bunCases } from './cases'

const PAGE = 4096
const PAGES = 40

/** Whether the mapping at `address` is registered for missing faults (`um` in its VmFlags). */
function registered(address: bigint): boolean {
  let inside = false
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line)
    if (range) inside = BigInt(`0x${range[1]}`) <= address && address < BigInt(`0x${range[2]}`)
    else if (inside && line.startsWith('VmFlags:')) return line.split(/\s+/).includes('um')
  }
  return false
}

test('the owner closes a region while a worker reads it: every page the view reads is right', async () => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(PAGES * PAGE)
  const expected = new Uint8Array(PAGES * PAGE).map((_, i) => ((i >> 12) * 13 + 1) & 0xff)
  uffd.register(region, { source: Source.bytes(expected) })
  const worker = new Worker(new URL('./view-toucher.ts', import.meta.url).href)
  const next = () =>
    Promise.race([
      new Promise<{ half?: boolean; seen?: number[]; closed?: boolean }>((resolve) => {
        worker.onmessage = (event) => resolve(event.data)
      }),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the toucher: no answer in time')), 15_000)),
    ])
  try {
    worker.postMessage({ shared: region.share(), pages: PAGES })
    expect((await next()).half).toBe(true)
    region.close()
    expect(region.closed).toBe(true)
    expect(registered(region.address)).toBe(true)
    worker.postMessage({ pages: PAGES })
    const done = await next()
    expect(done.seen).toEqual(Array.from({ length: PAGES }, (_, page) => expected[page * PAGE] as number))
    expect(done.closed).toBe(true)
    expect(registered(region.address)).toBe(false)
  } finally {
    uffd.close()
    worker.terminate()
  }
})

// A region's bytes(), a view in the owner thread, a closed region's share(): the case table
// region-views.spec.ts runs under Node.js (cases/regions.ts).
bunCases(regionCases)
