// The objects the object-store tests serve, and the check of every byte read back: word k of an
// object of seed s is a hash of (k, s), so a page from the wrong place or the wrong version fails.
import { parentPort } from 'node:worker_threads'
import { Region, type SharedRegion, type Source, type UffdError, Userfaultfd } from 'userfaultfd'

export const PAGE = 4096

function word(k: number, seed: number): number {
  let x = Math.imul(k ^ Math.imul(seed, 0x27d4eb2f) ^ 0x2545f491, 0x9e3779b1)
  x ^= x >>> 15
  x = Math.imul(x, 0x85ebca77)
  x ^= x >>> 13
  return x >>> 0
}

/** `size` bytes of the object of `seed`. */
export function objectBytes(size: number, seed = 1): Uint8Array {
  const words = new Uint32Array(Math.ceil(size / 4))
  for (let k = 0; k < words.length; k++) words[k] = word(k, seed)
  return new Uint8Array(words.buffer, 0, size)
}

/** What each page of a region holds: the object of one of `seeds` (zeros past `objectSize`), zeros, or something else. */
export interface Census {
  /** Pages per seed that matched it exactly. */
  bySeed: Record<number, number>
  zero: number
  wrong: number
  firstWrong: number
  ms: number
}

/** Reads every byte of `region` (on this thread) and sorts its pages into a census. */
export function census(region: Region, objectSize: number, seeds: number[], pages?: number[]): Census {
  const started = performance.now()
  const words = new Uint32Array(region.buffer)
  const result: Census = { bySeed: Object.fromEntries(seeds.map((s) => [s, 0])), zero: 0, wrong: 0, firstWrong: -1, ms: 0 }
  const count = region.size / PAGE
  const list = pages ?? Array.from({ length: count }, (_, i) => i)
  const perPage = PAGE / 4
  for (const page of list) {
    const first = page * perPage
    const expect = (k: number, seed: number) => (k * 4 < objectSize ? word(k, seed) : 0)
    const tail = (k: number, seed: number) => {
      // The object's last word may be cut short: only its bytes inside the object count.
      const value = expect(k, seed)
      const keep = Math.min(4, Math.max(0, objectSize - k * 4))
      return keep >= 4 ? value : value & ((1 << (keep * 8)) - 1)
    }
    let matched = -1
    // A page wholly past the object's end is no seed's: it must be zeros.
    for (const seed of page * PAGE < objectSize ? seeds : []) {
      let ok = true
      for (let i = 0; i < perPage; i++) {
        if (words[first + i] !== tail(first + i, seed)) {
          ok = false
          break
        }
      }
      if (ok) {
        matched = seed
        break
      }
    }
    if (matched >= 0) {
      result.bySeed[matched] = (result.bySeed[matched] ?? 0) + 1
      continue
    }
    let zero = true
    for (let i = 0; i < perPage; i++) {
      if (words[first + i] !== 0) {
        zero = false
        break
      }
    }
    if (zero) result.zero++
    else {
      result.wrong++
      if (result.firstWrong < 0) result.firstWrong = page
    }
  }
  result.ms = performance.now() - started
  return result
}

// As a worker: census of a shared region, posted back (the main thread stays free meanwhile).
parentPort?.on('message', (request: { shared: SharedRegion; objectSize: number; seeds: number[]; pages?: number[] }) => {
  try {
    const region = Region.attach(request.shared)
    parentPort?.postMessage(census(region, request.objectSize, request.seeds, request.pages))
  } catch (error) {
    parentPort?.postMessage({ error: String(error) })
  }
})

/**
 * A userfaultfd with a region of `size` (rounded up to pages) served by `source`, no handler, its
 * `'error'` events collected; both closed by the function pushed on `closers`.
 */
export function serveSource(
  source: Source,
  size: number,
  closers: (() => void)[],
  options: { timeoutMs?: number; fallthrough?: boolean } = {},
): { uffd: Userfaultfd; region: Region; errors: UffdError[] } {
  const uffd = new Userfaultfd(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs })
  const region = Region.anonymous(Math.ceil(size / PAGE) * PAGE)
  uffd.register(region, { source, fallthrough: options.fallthrough ?? false })
  const errors: UffdError[] = []
  uffd.on('error', (error) => errors.push(error))
  closers.push(() => {
    uffd.close()
    region.close()
  })
  return { uffd, region, errors }
}
