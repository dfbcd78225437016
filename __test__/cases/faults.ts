// Every cell of the kernel's memory types {anon, shmem, shmem-private, hugetlb, hugetlb-private}
// x {missing + copy, missing + zero, minor + continue}, with faults taken by a worker thread and
// served on the main thread, and faults taken by the main thread and served by handleInWorker. Each
// case checks the bytes the faulting thread read. Run under Node.js (faults.spec.ts) and Bun
// (bun/faults.test.ts).
import { type Fault, type Region, UffdError, Userfaultfd } from 'userfaultfd'
import { freeHugePages, kindOf, MEMORY_TYPES, type MemoryType, makeMemory, nextError, patternByte, patternPage } from '../helpers/harness'
import { type Check, type Runtime, table } from './check'

const { table: faultCases, define } = table()

export { faultCases }

type Resolution = 'copy' | 'zero' | 'continue'
const resolutions: Resolution[] = ['copy', 'zero', 'continue']
const PAGES = 3

/** Offsets the faulting thread reads: two bytes in page 1, one at the end of page 2. */
function probes(pageSize: number): number[] {
  return [pageSize + 5, pageSize + 100, 2 * pageSize + pageSize - 1]
}

/** What the thread must read at each probe. */
function expected(resolution: Resolution, pageSize: number): number[] {
  return probes(pageSize).map((at) => {
    const page = at - (at % pageSize)
    return resolution === 'zero' ? 0 : patternByte(page, pageSize, at % pageSize, resolution === 'continue' ? 9 : 0)
  })
}

function setUp(type: MemoryType, resolution: Resolution) {
  const uffd = new Userfaultfd()
  const region = makeMemory(type, PAGES)
  if (resolution === 'continue') {
    // Fill the page cache through an unregistered alias; minor faults then map it.
    const alias = region.alias()
    for (let page = 0; page < PAGES; page++) {
      const offset = page * region.pageSize
      alias.bytes(offset, region.pageSize).set(patternPage(offset, region.pageSize, 1, 9))
    }
    alias.close()
    uffd.register(region, { minor: true })
  } else {
    uffd.register(region, { missing: true })
  }
  return { uffd, region }
}

function resolve(fault: Fault, resolution: Resolution): void {
  if (resolution === 'copy') fault.copy(patternPage(fault.offset, fault.region.pageSize))
  else if (resolution === 'zero') fault.zero()
  else fault.continue()
}

function tearDown(uffd: Userfaultfd, region: Region): void {
  uffd.close()
  region.close()
}

const needsHugePages = PAGES * 2
const hugeSkipReason = `needs ${needsHugePages} free 2 MiB huge pages (sysctl -w vm.nr_hugepages=N), found ${freeHugePages()}`

for (const type of MEMORY_TYPES) {
  const kind = kindOf(type)
  for (const resolution of resolutions) {
    if (kind === 'anonymous' && resolution === 'continue') continue // MINOR on anonymous memory is refused: see api.spec.ts
    const skip = kind === 'hugetlb' && freeHugePages() < needsHugePages
    const add = skip ? define.skip : define.serial
    const title = `${type} ${resolution === 'continue' ? 'minor+continue' : `missing+${resolution}`}${skip ? ` (skipped: ${hugeSkipReason})` : ''}`
    if (kind === 'hugetlb' && resolution === 'zero') {
      add(`${title}: hugetlbfs has no ZEROPAGE, the handler's zero() throws and the fallback maps zeros`, (t, runtime) =>
        hugetlbZero(t, runtime, type),
      )
      continue
    }
    add(`${title}: a worker thread reads, the main thread's handler serves`, async (t, runtime) => {
      const { uffd, region } = setUp(type, resolution)
      const kinds: string[] = []
      uffd.handle((fault) => {
        kinds.push(fault.kind)
        resolve(fault, resolution)
      })
      try {
        const bytes = await runtime.touch(region, probes(region.pageSize))
        t.deepEqual(bytes, expected(resolution, region.pageSize))
        t.deepEqual(new Set(kinds), new Set([resolution === 'continue' ? 'minor' : 'missing']))
        t.is(uffd.stats.faults[resolution === 'continue' ? 'minor' : 'missing'], 2)
        if (resolution === 'zero') t.is(uffd.stats.resolutions.zeropage, 2, 'each fault resolved by ZEROPAGE')
      } finally {
        tearDown(uffd, region)
      }
    })
    add(`${title}: the main thread reads, handleInWorker serves`, async (t, runtime) => {
      const { uffd, region } = setUp(type, resolution)
      try {
        await uffd.handleInWorker(runtime.helper('pager'), { workerData: { mode: resolution, seed: 0 } })
        const view = new Uint8Array(region.buffer)
        const bytes = probes(region.pageSize).map((at) => view[at])
        t.deepEqual(bytes, expected(resolution, region.pageSize))
        t.is(uffd.stats.selfFaults, 0)
      } finally {
        tearDown(uffd, region)
      }
    })
  }
}

async function hugetlbZero(t: Check, runtime: Runtime, type: MemoryType): Promise<void> {
  const { uffd, region } = setUp(type, 'zero')
  const thrown: unknown[] = []
  uffd.handle((fault) => {
    try {
      fault.zero()
    } catch (error) {
      thrown.push(error)
      throw error
    }
  })
  try {
    const errorEvent = nextError(uffd)
    const bytes = await runtime.touch(region, [region.pageSize + 5])
    t.deepEqual(bytes, [0])
    const event = await errorEvent
    t.is(event.code, 'ERR_UFFD_HANDLER_THREW')
    const cause = thrown[0]
    t.true(cause instanceof UffdError)
    t.is((cause as UffdError).code, 'EOPNOTSUPP')
    t.is((cause as UffdError).syscall, 'UFFDIO_ZEROPAGE')
    t.regex((cause as UffdError).message, /hugetlbfs has no zero page/)
  } finally {
    tearDown(uffd, region)
  }
}
