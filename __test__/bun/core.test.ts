// The core cases under Bun: real faults from real threads, bytes checked.
import { describe, expect, test } from 'bun:test'
import { Region, UffdError, Userfaultfd } from 'userfaultfd'
import { freeHugePages, nextError, readInWorker } from './helpers'

const PAGE = 4096

describe('userfaultfd under Bun', () => {
  test('missing+copy: a worker reads, the main thread serves', async () => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(8 * PAGE)
    uffd.register(region)
    uffd.handle((fault) => {
      fault.copy(new Uint8Array(PAGE).fill(fault.offset / PAGE + 10))
    })
    const { bytes, worker } = readInWorker(region, [PAGE + 1, 5 * PAGE + 4095])
    expect(await bytes).toEqual([11, 15])
    expect(uffd.stats.faults.missing).toBe(2)
    worker.terminate()
    uffd.close()
    region.close()
  })

  test('missing+zero on shmem', async () => {
    const uffd = new Userfaultfd()
    const region = Region.shmem(4 * PAGE)
    uffd.register(region)
    uffd.handle((fault) => {
      fault.zero()
    })
    const { bytes, worker } = readInWorker(region, [2 * PAGE])
    expect(await bytes).toEqual([0])
    expect(uffd.stats.resolutions.zeropage).toBe(1)
    worker.terminate()
    uffd.close()
    region.close()
  })

  test('minor+continue on shmem maps what the alias wrote', async () => {
    const uffd = new Userfaultfd()
    const region = Region.shmem(4 * PAGE)
    const alias = region.alias()
    alias.bytes(PAGE, PAGE).fill(0x5c)
    uffd.register(region, { minor: true })
    uffd.handle((fault) => {
      expect(fault.kind).toBe('minor')
      fault.continue()
    })
    const { bytes, worker } = readInWorker(region, [PAGE + 9])
    expect(await bytes).toEqual([0x5c])
    worker.terminate()
    alias.close()
    uffd.close()
    region.close()
  })

  test('the main thread reads, handleInWorker serves', async () => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(16 * PAGE)
    uffd.register(region)
    await uffd.handleInWorker(new URL('./pager.ts', import.meta.url))
    const view = new Uint8Array(region.buffer)
    expect([view[0], view[3 * PAGE + 1], view[15 * PAGE + 4095]]).toEqual([1, 4, 16])
    expect(uffd.stats.selfFaults).toBe(0)
    uffd.close()
    region.close()
  })

  test('readers: 2 and handleInWorker({ workers: 2 }): the main thread reads, two workers that read the fd serve', async () => {
    const uffd = new Userfaultfd({ readers: 2 })
    const region = Region.anonymous(64 * PAGE)
    uffd.register(region)
    expect(uffd.stats.readers).toBe(2)
    const served = await uffd.handleInWorker(new URL('./pager.ts', import.meta.url), { workers: 2 })
    const view = new Uint8Array(region.buffer)
    const pages = Array.from({ length: 64 }, (_, page) => view[page * PAGE + 7])
    expect(pages).toEqual(Array.from({ length: 64 }, (_, page) => page + 1))
    served.off()
    uffd.close()
    region.close()
  })

  test.skipIf(freeHugePages() < 2)('hugetlb missing+copy (needs 2 free huge pages)', async () => {
    const uffd = new Userfaultfd()
    const region = Region.hugetlb(2 * 2 * 1024 * 1024)
    uffd.register(region)
    uffd.handle((fault) => {
      fault.copy(new Uint8Array(fault.region.pageSize).fill(0x42))
    })
    const { bytes, worker } = readInWorker(region, [2 * 1024 * 1024 + 7])
    expect(await bytes).toEqual([0x42])
    worker.terminate()
    uffd.close()
    region.close()
  })

  test('a self-fault gets the fallback and an error event, never a hang', async () => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(2 * PAGE)
    uffd.register(region)
    uffd.handle((fault) => {
      fault.copy(new Uint8Array(PAGE).fill(1))
    })
    const error = nextError(uffd)
    expect(new Uint8Array(region.buffer)[7]).toBe(0)
    expect((await error).code).toBe('ERR_UFFD_SELF_FAULT')
    uffd.close()
    region.close()
  })

  test('a handler that throws gets the fallback and an error event', async () => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(2 * PAGE)
    uffd.register(region)
    uffd.handle(() => {
      throw new Error('boom')
    })
    const error = nextError(uffd)
    const { bytes, worker } = readInWorker(region, [PAGE])
    expect(await bytes).toEqual([0])
    expect((await error).code).toBe('ERR_UFFD_HANDLER_THREW')
    worker.terminate()
    uffd.close()
    region.close()
  })

  test('close() with a fault pending wakes the thread', async () => {
    const uffd = new Userfaultfd({ timeoutMs: 0 })
    const region = Region.anonymous(2 * PAGE)
    uffd.register(region)
    uffd.handle(() => new Promise(() => {}))
    const { bytes, worker } = readInWorker(region, [PAGE])
    while (uffd.stats.inFlight < 1) await new Promise((resolve) => setTimeout(resolve, 10))
    uffd.close()
    expect(await bytes).toEqual([0])
    worker.terminate()
    region.close()
  })

  test('bad input throws UffdError or TypeError and leaves things working', () => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(2 * PAGE)
    uffd.register(region)
    expect(() => uffd.copy(region, 1, new Uint8Array(PAGE))).toThrow(UffdError)
    expect(() => uffd.copy(region, 0, new Uint8Array(10))).toThrow(/page size/)
    expect(() => uffd.register(region, { minor: true })).toThrow(/anonymous/)
    expect(() => Region.anonymous(-1)).toThrow(RangeError)
    expect(uffd.copy(region, 0, new Uint8Array(PAGE).fill(3))).toBe(PAGE)
    expect(new Uint8Array(region.buffer)[100]).toBe(3)
    uffd.close()
    region.close()
  })
})
