// A residency limit (maxResident) against the real kernel: a region far larger than its limit is
// read through with every byte right while about the limit stays mapped (the region's RSS in
// /proc/self/smaps); pages dropped fault again and read right; pages the program wrote are kept.
// Run under Node.js (residency.spec.ts) and Bun (bun/residency.test.ts).
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Region, type RegisterOptions, Source, type UffdError, Userfaultfd } from 'userfaultfd'
import { patternPage, within } from '../helpers/harness'
import { type Check, table } from './check'

const { table: residencyCases, define } = table()

export { residencyCases }

const MIB = 2 ** 20
const PAGE = 4096
const dir = mkdtempSync(join(tmpdir(), 'uffd-residency-'))
define.after(() => rmSync(dir, { recursive: true, force: true }))

/** A file of `size` bytes, each page its own pattern. */
function dataFile(name: string, size: number): string {
  const path = join(dir, name)
  const fd = openSync(path, 'w')
  const chunk = Buffer.alloc(MIB)
  for (let at = 0; at < size; at += MIB) {
    for (let i = 0; i < MIB; i += 4) chunk.writeUInt32LE(((at + i) * 2654435761) >>> 0, i)
    writeSync(fd, chunk, 0, MIB, at)
  }
  closeSync(fd)
  return path
}

/** The resident bytes of the mapping that starts at `address` (its Rss line in /proc/self/smaps). */
function rssOf(address: bigint): number {
  const lines = readFileSync('/proc/self/smaps', 'utf8').split('\n')
  const start = lines.findIndex((line) => line.startsWith(`${address.toString(16)}-`))
  const rss = lines.slice(start + 1).find((line) => line.startsWith('Rss:'))
  return Number(/(\d+)/.exec(rss ?? '')?.[1]) * 1024
}

/** A userfaultfd and an anonymous region of `size` registered with `options`, both closed after the test. */
function served(t: Check, size: number, options: RegisterOptions): { uffd: Userfaultfd; region: Region } {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(size)
  t.teardown(() => {
    uffd.close()
    region.close()
  })
  uffd.register(region, options)
  return { uffd, region }
}

async function settled(uffd: Userfaultfd, bytes: number): Promise<number> {
  const deadline = Date.now() + 10_000
  while (uffd.stats.residency.residentBytes > bytes && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  return uffd.stats.residency.residentBytes
}

define(
  'a 64 MiB region read through with an 8 MiB limit: every byte right, about 8 MiB resident, pages dropped and read again right',
  async (t) => {
    const size = 64 * MIB
    const limit = 8 * MIB
    const file = dataFile('big.bin', size)
    const expected = readFileSync(file)
    const { uffd, region } = served(t, size, { source: Source.file(file), maxResident: limit })
    const memory = new Uint8Array(region.buffer)
    let wrong = 0
    for (let round = 0; round < 2; round++) {
      for (let at = 0; at < size; at += PAGE) {
        if (memory[at] !== expected[at] || memory[at + PAGE - 1] !== expected[at + PAGE - 1]) wrong++
      }
    }
    t.is(wrong, 0)
    t.true((await settled(uffd, limit)) <= limit)
    t.true(rssOf(region.address) <= limit + MIB, `${rssOf(region.address)} bytes resident`)
    const { evictions, refaults, evictionBatches } = uffd.stats.residency
    t.true(evictions >= (2 * size - limit) / PAGE - 4096, `${evictions} evictions`)
    t.true(refaults >= (size - limit) / PAGE - 4096, `${refaults} refaults`)
    t.true(evictionBatches > 0 && evictionBatches < evictions / 16, `${evictionBatches} batches`)
  },
)

define('pages the program writes are kept (pinned) through evictions; the rest is read right after', async (t) => {
  const size = 16 * MIB
  const file = dataFile('written.bin', size)
  const expected = readFileSync(file)
  const { uffd, region } = served(t, size, { source: Source.file(file), maxResident: { bytes: 2 * MIB, high: 0.8, low: 0.5 } })
  const memory = new Uint8Array(region.buffer)
  const written = [0, 7, 100, 1000, 4095].map((page) => page * PAGE + 11)
  for (const at of written) memory[at] = 0xab
  for (let round = 0; round < 3; round++) {
    for (let at = 0; at < size; at += PAGE) if (!written.includes(at + 11)) t.is(memory[at + 11], expected[at + 11])
  }
  for (const at of written) t.is(memory[at], 0xab, `the write at ${at}`)
  t.is(uffd.stats.residency.dirtyBytes, written.length * PAGE)
  t.true(uffd.stats.residency.evictions > 0)
})

define('a limit is checked: too small for the readahead window, not a number, on a private mapping of shmem', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(MIB)
  const shared = Region.shmem(MIB, { private: true })
  t.teardown(() => {
    uffd.close()
    region.close()
    shared.close()
  })
  t.throws(() => uffd.register(region, { source: Source.zero(), maxResident: 8 * PAGE }), {
    instanceOf: RangeError,
    message: /at least 376832 \(a readahead window of 64 pages below the low water mark, 0.7\)/,
  })
  t.throws(() => uffd.register(region, { source: Source.zero(), maxResident: { bytes: MIB, high: 0.5, low: 0.6 } }), {
    instanceOf: RangeError,
  })
  t.throws(() => uffd.register(region, { maxResident: 'a lot' as unknown as number }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => uffd.register(shared, { source: Source.zero(), maxResident: MIB }), {
    code: 'EOPNOTSUPP',
    message: /private anonymous memory, or shared shmem or hugetlb memory, not private shmem memory/,
  })
})

define('shared shmem through a limit: pages dropped are holes punched in its file, read again right', async (t) => {
  const size = 16 * MIB
  const file = dataFile('shmem.bin', size)
  const expected = readFileSync(file)
  const uffd = new Userfaultfd()
  const region = Region.shmem(size)
  t.teardown(() => {
    uffd.close()
    region.close()
  })
  uffd.register(region, { source: Source.file(file), maxResident: 2 * MIB })
  const memory = new Uint8Array(region.buffer)
  let wrong = 0
  for (let pass = 0; pass < 2; pass++) for (let at = 0; at < size; at += 1024) if (memory[at] !== expected[at]) wrong++
  t.is(wrong, 0)
  const stats = uffd.stats.residency
  t.true(stats.refaults > 0 && stats.evictions > 0, JSON.stringify(stats))
  t.true((await settled(uffd, 2 * MIB)) <= 2 * MIB)
  // The memory really went: the region's shared memory counted by the kernel stays about the limit.
  t.true(rssOf(region.address) <= 3 * MIB, `${rssOf(region.address)} bytes of the region resident`)
})

define(
  'a writable file source: what the program writes reaches the file on flush(), also through evictions; untouched bytes stay',
  async (t) => {
    const size = 16 * MIB
    const file = dataFile('writable.bin', size)
    const before = readFileSync(file)
    const { uffd, region } = served(t, size, { source: Source.file(file, { writable: true }), maxResident: 2 * MIB })
    const memory = new Uint8Array(region.buffer)
    // Every page written once (far more than the limit: most are written back as they are dropped).
    for (let at = 0; at < size; at += PAGE) memory[at + 5] = (at / PAGE) & 0xff
    await uffd.flush({ sync: true })
    const after = readFileSync(file)
    let wrong = 0
    for (let at = 0; at < size; at++) {
      const want = at % PAGE === 5 ? ((at - 5) / PAGE) & 0xff : before[at]
      if (after[at] !== want) wrong++
    }
    t.is(wrong, 0)
    const { writeBacks, evictions, dirtyBytes, writeBackErrors } = uffd.stats.residency
    t.is(writeBacks, size / PAGE)
    t.true(evictions > 0)
    t.is(dirtyBytes, 0)
    t.is(writeBackErrors, 0)
    // Read back through the mapping too: pages dropped come from the file, which has the writes.
    for (let at = 0; at < size; at += PAGE) if (memory[at + 5] !== ((at / PAGE) & 0xff)) wrong++
    t.is(wrong, 0)
  },
)

define(
  'a write-back that fails rejects flush() with the file, the offset and the errno; the write stays in memory and is tried again',
  async (t) => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(MIB)
    t.teardown(() => {
      uffd.close()
      region.close()
    })
    // /dev/full reads as zeros and refuses every write with ENOSPC.
    uffd.register(region, { source: Source.file('/dev/full', { writable: true }) })
    const memory = new Uint8Array(region.buffer)
    memory[3 * PAGE] = 0x42
    const error = await t.throwsAsync<UffdError>(uffd.flush(), { code: 'ENOSPC', message: /\/dev\/full.*offset 12288/ })
    t.is(error?.syscall, 'pwrite')
    t.is(memory[3 * PAGE], 0x42)
    t.is(uffd.stats.residency.writeBackErrors, 1)
    await t.throwsAsync(uffd.flush(), { code: 'ENOSPC' })
  },
)

define(
  'a JavaScript handler with a limit: the main thread reads 16 MiB through 2 MiB, each dropped page is asked of the handler again; written pages are kept',
  async (t, runtime) => {
    const size = 16 * MIB
    const limit = 2 * MIB
    const tally = new Int32Array(new SharedArrayBuffer(8 * 4))
    const { uffd, region } = served(t, size, { maxResident: limit })
    await within(uffd.handleInWorker(runtime.helper('pager'), { workerData: { mode: 'copy', seed: 9, tally } }), 'the worker')
    const memory = new Uint8Array(region.buffer)
    const pages = size / PAGE
    let wrong = 0
    let most = 0
    for (let pass = 0; pass < 2; pass++) {
      for (let page = 0; page < pages; page++) {
        const want = patternPage(page * PAGE, PAGE, 1, 9)
        for (const i of [0, 1, 5, 100, PAGE - 1]) if (memory[page * PAGE + i] !== want[i]) wrong++
        most = Math.max(most, uffd.stats.residency.residentBytes)
      }
    }
    t.is(wrong, 0)
    // Written pages stay (there is nowhere to write them back), and keep what was written.
    for (let page = 0; page < 8; page++) memory[page * 64 * PAGE + 7] = 0xa0 + page
    for (let page = 0; page < pages; page++) if (memory[page * PAGE + 2] !== 0) wrong++
    for (let page = 0; page < 8; page++) if (memory[page * 64 * PAGE + 7] !== 0xa0 + page) wrong++
    t.is(wrong, 0)
    const stats = uffd.stats.residency
    const handled = tally[1] ?? 0
    t.true(most <= limit + 64 * PAGE, `${most} bytes resident at most for a limit of ${limit}`)
    t.true(stats.evictions > pages, JSON.stringify(stats))
    t.true(stats.refaults > pages, JSON.stringify(stats))
    t.true(handled > 2 * pages, `the handler was asked ${handled} times for ${pages} pages read 3 times`)
    t.is(stats.dirtyBytes, 8 * PAGE)
  },
)

define(
  'a write-back of the evictor that fails is an error event (once, not per page) naming the file and the errno; every write stays in memory',
  async (t) => {
    const size = 4 * MIB
    const uffd = new Userfaultfd()
    const region = Region.anonymous(size)
    t.teardown(() => {
      uffd.close()
      region.close()
    })
    const errors: UffdError[] = []
    uffd.on('error', (error) => errors.push(error))
    // /dev/full reads as zeros and refuses every write with ENOSPC: nothing written can be dropped.
    uffd.register(region, { source: Source.file('/dev/full', { writable: true }), maxResident: MIB })
    const memory = new Uint8Array(region.buffer)
    for (let at = 0; at < size; at += PAGE) memory[at + 3] = (at / PAGE) & 0xff
    const deadline = Date.now() + 10_000
    while (errors.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    const [first] = errors
    t.is(first?.code, 'ERR_UFFD_WRITE_BACK')
    t.regex(first?.message ?? '', /\/dev\/full.*ENOSPC|ENOSPC.*\/dev\/full/)
    t.is((first?.cause as UffdError | undefined)?.code, 'ENOSPC')
    let wrong = 0
    for (let at = 0; at < size; at += PAGE) if (memory[at + 3] !== ((at / PAGE) & 0xff)) wrong++
    t.is(wrong, 0)
    t.is(uffd.stats.residency.dirtyBytes, size)
    t.true(errors.length <= 2, `${errors.length} error events for ${size / PAGE} pages`)
    await t.throwsAsync(uffd.flush(), { code: 'ENOSPC' })
  },
)

define('Source.layers(paths, { writable: true }): writes go back to the topmost file, the base is never written', async (t) => {
  const size = 4 * MIB
  const base = dataFile('layers-base.bin', size)
  const diff = join(dir, 'layers-diff.bin')
  closeSync(openSync(diff, 'w'))
  const before = readFileSync(base)
  const { uffd, region } = served(t, size, { source: Source.layers([base, diff], { writable: true }), maxResident: MIB })
  const memory = new Uint8Array(region.buffer)
  for (let at = 0; at < size; at += 2 * PAGE) memory[at + 9] = 0x77
  await uffd.flush()
  t.true(readFileSync(base).equals(before), 'the base is unchanged')
  const written = readFileSync(diff)
  let wrong = 0
  for (let at = 0; at < size; at += 2 * PAGE) if (written[at + 9] !== 0x77) wrong++
  // Read back through the limit: dropped pages come from the diff where it has them.
  for (let at = 0; at < size; at += PAGE) if (memory[at + 9] !== ((at / PAGE) % 2 === 0 ? 0x77 : before[at + 9])) wrong++
  t.is(wrong, 0)
  t.true(uffd.stats.residency.refaults > 0)
})
