// Native page sources: faults resolved on the loop thread with no JavaScript, so the main thread
// reads the memory with no handler and no worker at all; readahead maps several pages per fault.
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { patternByte, patternPage, withReader } from './helpers/harness'

const PAGE = 4096
const PAGES = 256
const dir = mkdtempSync(join(tmpdir(), 'uffd-source-'))
const file = join(dir, 'data')
writeFileSync(file, patternPage(0, PAGE, PAGES))
test.after.always(() => rmSync(dir, { recursive: true, force: true }))

/** Reads byte 5 of every page on this thread; returns how many differ from `expected`. */
function mismatches(region: Region, expected: (page: number) => number): number {
  const bytes = new Uint8Array(region.buffer)
  let wrong = 0
  for (let page = 0; page < region.size / PAGE; page++) if (bytes[page * PAGE + 5] !== expected(page)) wrong++
  return wrong
}

for (const pages of [1, 16]) {
  test(`Source.file with ${pages} page(s) per fault: the main thread reads a file on first touch, no handler`, (t) => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(PAGES * PAGE)
    uffd.register(region, { source: Source.file(file), readahead: { pages } })
    t.is(
      mismatches(region, (page) => patternByte(page * PAGE, PAGE, 5)),
      0,
    )
    t.is(uffd.stats.faults.missing, PAGES / pages)
    t.is(uffd.stats.selfFaults, 0)
    uffd.close()
    region.close()
  })
}

test('adaptive readahead grows on sequential faults: far fewer faults than pages', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(PAGES * PAGE)
  uffd.register(region, { source: Source.file(file), readahead: { pages: 2, adaptive: true, maxPages: 64 } })
  t.is(
    mismatches(region, (page) => patternByte(page * PAGE, PAGE, 5)),
    0,
  )
  const faults = uffd.stats.faults.missing
  t.true(faults <= 10, `${faults} faults for ${PAGES} pages`)
  uffd.close()
  region.close()
})

test('adaptive readahead shrinks on random faults: the window halves down to the faulting page', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(PAGES * PAGE)
  uffd.register(region, { source: Source.file(file), readahead: { pages: 16, adaptive: true } })
  const view = new Uint8Array(region.buffer)
  // Pages far apart, each after the last one's window: every fault is a jump.
  const pages = [0, 200, 40, 240, 80, 120, 160, 20, 60, 100]
  for (const page of pages) t.is(view[page * PAGE + 5], patternByte(page * PAGE, PAGE, 5), `page ${page}`)
  t.is(uffd.stats.faults.missing, pages.length)
  // 16 + 8 + 4 + 2 + 1 + 1 + 1 + 1 + 1 + 1 pages, not 10 x 16.
  t.is(uffd.stats.bytesMapped, 36 * PAGE)
  uffd.close()
  region.close()
})

test('Source.file from an fd and an offset; past the end of the file, zeros', (t) => {
  const fd = openSync(file, 'r')
  const uffd = new Userfaultfd()
  const region = Region.anonymous((PAGES + 8) * PAGE)
  uffd.register(region, { source: Source.file(fd, { offset: 16 * PAGE }), readahead: { pages: 4 } })
  t.is(
    mismatches(region, (page) => (page + 16 < PAGES ? patternByte((page + 16) * PAGE, PAGE, 5) : 0)),
    0,
  )
  closeSync(fd)
  uffd.close()
  region.close()
})

test('Source.bytes and Source.zero', (t) => {
  const uffd = new Userfaultfd()
  const bytes = Region.anonymous(32 * PAGE)
  const zero = Region.anonymous(32 * PAGE)
  uffd.register(bytes, { source: Source.bytes(patternPage(0, PAGE, 16)), readahead: { pages: 8 } })
  uffd.register(zero, { source: Source.zero(), readahead: { pages: 8 } })
  t.is(
    mismatches(bytes, (page) => (page < 16 ? patternByte(page * PAGE, PAGE, 5) : 0)),
    0,
  )
  t.is(
    mismatches(zero, () => 0),
    0,
  )
  t.is(uffd.stats.faults.missing, 8)
  uffd.close()
  bytes.close()
  zero.close()
})

test('Source.pageCache serves minor faults of shmem with CONTINUE', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.shmem(64 * PAGE)
  const alias = region.alias()
  alias.bytes().set(patternPage(0, PAGE, 64))
  uffd.register(region, { source: Source.pageCache(), readahead: { pages: 16 } })
  t.is(
    mismatches(region, (page) => patternByte(page * PAGE, PAGE, 5)),
    0,
  )
  t.is(uffd.stats.faults.minor, 4)
  t.is(uffd.stats.resolutions.continue, 4)
  alias.close()
  uffd.close()
  region.close()
})

test('bad sources are refused', (t) => {
  t.throws(() => Source.file(join(dir, 'missing')), { code: 'ENOENT' })
  t.throws(() => Source.file({} as string), { instanceOf: TypeError })
  t.throws(() => Source.bytes('x' as unknown as Uint8Array), { instanceOf: TypeError })
  const uffd = new Userfaultfd()
  const region = Region.anonymous(PAGE)
  t.throws(() => uffd.register(region, { source: {} as Source }), { instanceOf: TypeError })
  t.throws(() => uffd.register(region, { source: Source.zero(), readahead: { pages: -1 } }), {
    instanceOf: RangeError,
    code: 'ERR_OUT_OF_RANGE',
  })
  uffd.close()
  region.close()
})

test('fallthrough: a bytes source maps what it has, whole pages past its end go to the handler', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(8 * PAGE)
  const bytes = patternPage(0, PAGE, 5).subarray(0, 4 * PAGE + 100)
  uffd.register(region, { source: Source.bytes(bytes), fallthrough: true })
  const handled: number[] = []
  uffd.handle((fault) => {
    handled.push(fault.offset / PAGE)
    fault.copy(patternPage(fault.offset, PAGE, 1, 3))
  })
  await withReader([uffd, region], async (reader) => {
    const offsets = [0, 1, 2, 3, 4, 5, 6, 7].map((page) => page * PAGE + 5).concat([4 * PAGE + 99, 4 * PAGE + 100])
    const { bytes: read } = await reader.read(region, { offsets })
    const want = [0, 1, 2, 3, 4].map((page) => patternByte(page * PAGE, PAGE, 5))
    want.push(...[5, 6, 7].map((page) => patternByte(page * PAGE, PAGE, 5, 3)))
    want.push(bytes[4 * PAGE + 99] ?? -1, 0)
    t.deepEqual(read, want)
    t.deepEqual(handled, [5, 6, 7])
    t.is(uffd.stats.native, 5)
  })
})

test('fault.fromSource: the handler picks a source per fault, native code maps it', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(6 * PAGE)
  const even = Source.bytes(patternPage(0, PAGE, 6, 1))
  const odd = Source.file(file)
  uffd.register(region, { missing: true, wp: true })
  const thrown: unknown[] = []
  uffd.handle((fault) => {
    if (fault.kind === 'wp') {
      try {
        fault.fromSource(odd)
      } catch (error) {
        thrown.push(error)
      }
      fault.unprotect()
      return
    }
    t.is(fault.fromSource((fault.offset / PAGE) % 2 === 0 ? even : odd), PAGE)
    t.is(fault.fromSource(odd), 0, 'a second resolve is a no-op')
  })
  await withReader([uffd, region], async (reader) => {
    const offsets = [0, 1, 2, 3, 4, 5].map((page) => page * PAGE + 5)
    const { bytes: read } = await reader.read(region, { offsets })
    t.deepEqual(
      read,
      offsets.map((_, page) => patternByte(page * PAGE, PAGE, 5, page % 2 === 0 ? 1 : 0)),
    )
    uffd.writeProtect(region, 0, PAGE, true)
    await reader.read(region, { offsets: [7], write: 1 })
    t.is(thrown.length, 1)
    t.like(thrown[0], { code: 'EINVAL' })
    t.regex((thrown[0] as Error).message, /does not serve wp faults/)
  })
})

test('prefetch fills a registered range from its source in the background; touched pages are skipped', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(PAGES * PAGE)
  uffd.register(region, { source: Source.file(file) })
  const view = new Uint8Array(region.buffer)
  t.is(view[3 * PAGE + 5], patternByte(3 * PAGE, PAGE, 5), 'a fault before the prefetch')
  const result = await uffd.prefetch(region, undefined, { chunkPages: 16 })
  t.is(result.mapped + result.present, PAGES * PAGE)
  t.is(result.present, PAGE)
  t.false(result.stopped)
  const faultsBefore = uffd.stats.faults.missing
  t.is(
    mismatches(region, (page) => patternByte(page * PAGE, PAGE, 5)),
    0,
  )
  t.is(uffd.stats.faults.missing, faultsBefore, 'no page faults after the prefetch')
  const again = await uffd.prefetch(region, [{ offset: 0, length: 4 * PAGE }])
  t.deepEqual([again.mapped, again.present], [0, 4 * PAGE])
  uffd.close()
  region.close()
})

test('prefetch from a given source, aborted, and refused where nothing says where bytes come from', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(PAGES * PAGE)
  uffd.register(region)
  await t.throwsAsync(uffd.prefetch(region), { code: 'EINVAL', message: /without a source/ })
  await t.throwsAsync(uffd.prefetch(region, [{ offset: 1, length: PAGE }], { source: Source.zero() }), { code: 'EINVAL' })
  t.throws(() => uffd.prefetch(region, [{ offset: -1, length: PAGE }]), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  const controller = new AbortController()
  controller.abort()
  const aborted = await uffd.prefetch(region, undefined, { source: Source.file(file), signal: controller.signal })
  t.true(aborted.stopped)
  t.is(aborted.mapped, 0)
  const some = await uffd.prefetch(region, [{ offset: 8 * PAGE, length: 8 * PAGE }], {
    source: Source.bytes(patternPage(0, PAGE, PAGES, 2)),
  })
  t.is(some.mapped, 8 * PAGE)
  t.is(region.bytes(8 * PAGE, PAGE)[5], patternByte(8 * PAGE, PAGE, 5, 2))
  uffd.close()
  const closed = await uffd.prefetch(region, undefined, { source: Source.zero() }).catch((error: unknown) => error)
  t.like(closed, { code: 'EBADF' })
  region.close()
})

test('prefetch steps aside for a thread that faults meanwhile, and every byte is right', async (t) => {
  const big = 8192
  const uffd = new Userfaultfd()
  const region = Region.anonymous(big * PAGE)
  uffd.register(region, { source: Source.bytes(patternPage(0, PAGE, big)) })
  await withReader([uffd, region], async (reader) => {
    const prefetch = uffd.prefetch(region, undefined, { chunkPages: 1 })
    const offsets = Array.from({ length: 64 }, (_, i) => (big - 1 - i * 97) * PAGE + 5)
    const { bytes } = await reader.read(region, { offsets })
    t.deepEqual(
      bytes,
      offsets.map((at) => patternByte(at - 5, PAGE, 5)),
    )
    const result = await prefetch
    t.is(result.mapped + result.present, big * PAGE)
    t.is(
      mismatches(region, (page) => patternByte(page * PAGE, PAGE, 5)),
      0,
    )
  })
})

test('prefetch leaves the pages past a fallthrough source’s end to the handler', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(8 * PAGE)
  uffd.register(region, { source: Source.bytes(patternPage(0, PAGE, 5).subarray(0, 4 * PAGE + 100)), fallthrough: true })
  const handled: number[] = []
  uffd.handle((fault) => {
    handled.push(fault.offset / PAGE)
    fault.copy(patternPage(fault.offset, PAGE, 1, 3))
  })
  const result = await uffd.prefetch(region)
  t.deepEqual([result.mapped, result.present], [5 * PAGE, 0])
  await withReader([uffd, region], async (reader) => {
    const { bytes } = await reader.read(region, { offsets: [4 * PAGE + 5, 6 * PAGE + 5] })
    t.deepEqual(bytes, [patternByte(4 * PAGE, PAGE, 5), patternByte(6 * PAGE, PAGE, 5, 3)])
    t.deepEqual(handled, [6])
  })
})
