// How a fault is resolved: without waking (the thread sleeps until a wake), write and read faults,
// readahead past the faulting page and clipped to the region, EEXIST, a resolve with no length. Run
// under Node.js (resolving.spec.ts) and Bun (bun/resolving.test.ts).
import { type Fault, Region, Userfaultfd } from 'userfaultfd'
import { anonymous, gate, patternByte, patternPage, within } from '../helpers/harness'
import { table } from './check'
import { answersWithin } from './handlers'

const { table: resolvingCases, define } = table()

export { resolvingCases }

const PAGE = 4096
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

define('a fault resolved with { wake: false } sleeps past the handler’s return until fault.wake()', async (t, runtime) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const held: Array<{ wake(): void }> = []
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE), { wake: false })
    held.push(fault)
  })
  const errors: string[] = []
  uffd.on('error', (error) => errors.push(error.code))
  try {
    const read = runtime.touch(region, [2 * PAGE + 5])
    await within(
      (async () => {
        while (held.length === 0) await sleep(5)
      })(),
      'the handler',
    )
    t.false(await answersWithin(read, 300), 'still asleep after the handler returned')
    held[0]?.wake()
    t.deepEqual(await read, [patternByte(2 * PAGE, PAGE, 5)])
    t.deepEqual(errors, [])
  } finally {
    uffd.close()
    region.close()
  }
})

define('dontwake: copy with { wake: false } leaves the thread asleep until fault.wake()', async (t, runtime) => {
  const { uffd, region } = anonymous(4)
  const resolved = gate()
  const release = gate()
  uffd.handle(async (fault) => {
    t.is(fault.copy(patternPage(fault.offset, PAGE), { wake: false }), PAGE)
    resolved.open()
    await release.promise
    fault.wake()
  })
  try {
    const read = runtime.touch(region, [PAGE + 5])
    await within(resolved.promise, 'the copy')
    t.false(await answersWithin(read, 300), 'the reader must still be asleep')
    release.open()
    t.deepEqual(await read, [patternByte(PAGE, PAGE, 5)])
    t.is(uffd.stats.resolutions.wake, 1)
  } finally {
    uffd.close()
    region.close()
  }
})

define('dontwake: uffd.wake() over the range wakes a thread resolved without waking', async (t, runtime) => {
  const { uffd, region } = anonymous(4)
  const resolved = gate()
  uffd.handle(async (fault) => {
    uffd.copy(region, fault.offset, patternPage(fault.offset, PAGE), { wake: false })
    resolved.open()
    await new Promise((resolve) => setTimeout(resolve, 300))
    uffd.wake(region, 0, region.size)
  })
  try {
    const read = runtime.touch(region, [2 * PAGE + 1])
    await within(resolved.promise, 'the copy')
    t.false(await answersWithin(read, 150), 'the reader must still be asleep')
    t.deepEqual(await read, [patternByte(2 * PAGE, PAGE, 1)])
    t.is(uffd.stats.fallbacks, 0)
  } finally {
    uffd.close()
    region.close()
  }
})

define('write faults say write: true and read faults say false; the written byte lands', async (t, runtime) => {
  const { uffd, region } = anonymous(4)
  const seen: Array<[number, boolean]> = []
  uffd.handle((fault) => {
    seen.push([fault.offset, fault.write])
    fault.copy(patternPage(fault.offset, PAGE))
  })
  try {
    t.deepEqual(await runtime.touch(region, [PAGE + 3], 0x77), [0x77])
    t.deepEqual(await runtime.touch(region, [2 * PAGE + 5]), [patternByte(2 * PAGE, PAGE, 5)])
    t.deepEqual(seen, [
      [PAGE, true],
      [2 * PAGE, false],
    ])
    t.is(new Uint8Array(region.buffer)[PAGE + 5], patternByte(PAGE, PAGE, 5), 'the rest of the page is the copied bytes')
  } finally {
    uffd.close()
    region.close()
  }
})

define('readahead: one copy of 16 pages answers the fault and maps the 15 after it', async (t, runtime) => {
  const { uffd, region } = anonymous(32)
  const faults: Fault[] = []
  uffd.handle((fault) => {
    faults.push(fault)
    t.is(fault.copy(patternPage(fault.offset, PAGE, 16)), 16 * PAGE)
  })
  try {
    const offsets = Array.from({ length: 16 }, (_, page) => (4 + page) * PAGE + 100)
    const bytes = await runtime.touch(region, offsets)
    t.deepEqual(
      bytes,
      offsets.map((at) => patternByte(at - 100, PAGE, 100)),
    )
    t.is(faults.length, 1)
    t.is(faults[0]?.offset, 4 * PAGE)
    t.is(uffd.stats.bytesMapped, 16 * PAGE)
  } finally {
    uffd.close()
    region.close()
  }
})

define('readahead is clipped to the region: a copy past its end maps what fits', async (t, runtime) => {
  const { uffd, region } = anonymous(4)
  uffd.handle((fault) => {
    t.is(fault.copy(patternPage(fault.offset, PAGE, 8)), PAGE)
  })
  try {
    t.deepEqual(await runtime.touch(region, [3 * PAGE]), [patternByte(3 * PAGE, PAGE, 0)])
  } finally {
    uffd.close()
    region.close()
  }
})

define('eexist: a fault resolved by someone else counts EEXIST, maps 0 bytes and does not throw', async (t, runtime) => {
  const { uffd, region } = anonymous(4)
  uffd.handle((fault) => {
    uffd.copy(region, fault.offset, patternPage(fault.offset, PAGE, 1, 3))
    t.is(fault.copy(patternPage(fault.offset, PAGE)), 0)
  })
  try {
    t.deepEqual(await runtime.touch(region, [PAGE + 1]), [patternByte(PAGE, PAGE, 1, 3)])
    t.is(uffd.stats.eexist, 1)
    const again = t.throws(() => uffd.copy(region, PAGE, new Uint8Array(PAGE)))
    t.is((again as { code?: string }).code, 'EEXIST')
  } finally {
    uffd.close()
    region.close()
  }
})

define(
  "a handler's fault.copy and fault.zero with an empty or negative length throw the same RangeError (a long one is clipped to the region)",
  async (t, runtime) => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(2 * PAGE)
    uffd.register(region)
    const thrown: unknown[] = []
    uffd.handle((fault) => {
      for (const bad of [() => fault.copy(new Uint8Array(0)), () => fault.zero({ length: 0 }), () => fault.zero({ length: -PAGE })]) {
        try {
          bad()
        } catch (error) {
          thrown.push(error)
        }
      }
      fault.copy(patternPage(fault.offset, PAGE))
    })
    try {
      const bytes = await runtime.touch(region, [5])
      t.deepEqual(bytes, [patternByte(0, PAGE, 5)])
    } finally {
      uffd.close()
      region.close()
    }
    t.is(thrown.length, 3)
    for (const error of thrown) t.like(error, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' })
  },
)
