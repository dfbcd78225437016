// Opening, registering, faulting and closing many times leaves nothing behind: no fd, no thread,
// no mapping (read from /proc/self).

import { readdirSync, readFileSync } from 'node:fs'
import test from 'ava'
import { Region, Userfaultfd } from 'userfaultfd'
import { avaCases } from './cases/ava'
import { lifecycleCases } from './cases/lifecycle'
import { patternByte, patternPage, Toucher, within, withToucher } from './helpers/harness'

const CYCLES = 10_000
const PAGE = 4096

function resources() {
  return {
    fds: readdirSync('/proc/self/fd').length,
    threads: readdirSync('/proc/self/task').length,
    mappings: readFileSync('/proc/self/maps', 'utf8').split('\n').length,
    virtualKiB: Number(/VmSize:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]),
  }
}

async function collect(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) throw new Error('run with --expose-gc')
  for (let i = 0; i < 3; i++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
}

async function cycle(toucher: Toucher, index: number): Promise<number> {
  const uffd = new Userfaultfd()
  // 1 MiB of address space each, one page touched: 10,000 leaked regions would be 10 GiB.
  const region = Region.anonymous(256 * PAGE)
  uffd.register(region)
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE, 1, index))
  })
  const { bytes } = await toucher.read(region, { offsets: [5] })
  uffd.close()
  region.close()
  return bytes[0] as number
}

test.serial(`${CYCLES} open/register/fault/close cycles leave no fd, thread or mapping behind`, async (t) => {
  const toucher = new Toucher()
  try {
    for (let i = 0; i < 50; i++) await cycle(toucher, i)
    await collect()
    const before = resources()
    let wrong = 0
    for (let i = 0; i < CYCLES; i++) {
      if ((await cycle(toucher, i)) !== patternByte(0, PAGE, 5, i)) wrong++
    }
    t.is(wrong, 0, 'every cycle read the bytes its handler copied')
    t.deepEqual(
      { fds: resources().fds, threads: resources().threads },
      { fds: before.fds, threads: before.threads },
      'fds and threads are released by close()',
    )
    await collect()
    const after = resources()
    t.log({ before, after })
    // A few mappings come and go with V8's heap; 10,000 leaked regions would be 10,000 and 10 GiB.
    t.true(after.mappings <= before.mappings + 50, `mappings went from ${before.mappings} to ${after.mappings}`)
    t.true(after.virtualKiB <= before.virtualKiB + 256 * 1024, `address space went from ${before.virtualKiB} to ${after.virtualKiB} KiB`)
  } finally {
    await toucher.terminate()
  }
})

test.serial('a closed region gives its pages back at once; its address range goes with its last view', async (t) => {
  const region = Region.anonymous(64 * PAGE)
  const view = new Uint8Array(region.buffer)
  view.fill(1)
  const rss = () => Number(/Rss:\s+(\d+)/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1])
  const start = `${region.address.toString(16)}-`
  const mapped = () =>
    readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .some((line) => line.startsWith(start))
  const resident = rss()
  region.close()
  t.is(view.length, 0, 'the buffer is detached')
  t.true(rss() <= resident - 200, 'the 256 KiB went back to the kernel')
  await collect()
  t.false(mapped(), 'the mapping is gone once nothing refers to it')
})

test('regions dropped without close() are collected: their tokens attach to nothing', async (t) => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) {
    t.fail('needs node --expose-gc (the ava config passes it)')
    return
  }
  const tokens = Array.from({ length: 200 }, () => Region.anonymous(4096).share())
  for (let round = 0; round < 10; round++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
  const live = tokens.filter((token) => {
    try {
      Region.attach(token).close()
      return true
    } catch {
      return false
    }
  })
  t.true(live.length < tokens.length / 2, `${live.length} of ${tokens.length} unclosed regions still named by their tokens`)
})

test("'close' is emitted on the next tick, once, as Node's handles do", async (t) => {
  const uffd = new Userfaultfd()
  const order: string[] = []
  uffd.on('close', () => order.push('close'))
  uffd.close()
  uffd.close()
  order.push('close() returned')
  t.deepEqual(order, ['close() returned'], 'not inside close()')
  t.true(uffd.closed, 'closed at once all the same')
  await new Promise<void>((resolve) => setImmediate(resolve))
  t.deepEqual(order, ['close() returned', 'close'])
})

test('closed is true after close() on a handle from Userfaultfd.attach; the owner stays open and serves', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const attached = Userfaultfd.attach(uffd.share())
  t.false(attached.closed)
  attached.close()
  t.true(attached.closed)
  t.false(uffd.closed, 'the fd is the owner’s')
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE))
  })
  await withToucher([uffd, region], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: [PAGE + 5] })).bytes, [patternByte(PAGE, PAGE, 5)])
  })
  t.true(uffd.closed)
  await within(new Promise((resolve) => setImmediate(resolve)), 'a tick')
})

// close() with faults pending: the case table both runtimes run (cases/lifecycle.ts; Bun runs it in
// bun/lifecycle.test.ts).
avaCases(lifecycleCases)
