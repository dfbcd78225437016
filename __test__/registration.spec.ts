import test from 'ava'
import { Region, Source, UffdError, Userfaultfd } from 'userfaultfd'
import { patternByte, patternPage } from './helpers/harness'

const PAGE = 4096

/** Byte 5 of every page of the region, read on this thread (a native source serves it). */
function fifthBytes(region: Region): number[] {
  const bytes = new Uint8Array(region.buffer)
  return Array.from({ length: region.size / PAGE }, (_, page) => bytes[page * PAGE + 5] as number)
}

const expected = (pages: number, from = 0) => Array.from({ length: pages }, (_, page) => patternByte((from + page) * PAGE, PAGE, 5))

test('registering a range again without a source (to add write-protection) keeps the source: pages read its bytes, not zeros', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(8 * PAGE)
  uffd.register(region, { source: Source.bytes(patternPage(0, PAGE, 8)) })
  const again = uffd.register(region, { missing: true, wp: true })
  t.true(again.ioctls.has('WRITEPROTECT'), 'the second registration added write-protection')
  t.deepEqual(fifthBytes(region), expected(8), 'every page came from the source of the first registration')
  t.is(uffd.stats.fallbacks, 0, 'no page fell back to zeros')
  uffd.close()
  region.close()
})

test('a registration without a source over part of a served range keeps the source on that part only', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(8 * PAGE)
  uffd.register(region, { source: Source.bytes(patternPage(0, PAGE, 8)), offset: 2 * PAGE, length: 4 * PAGE })
  uffd.register(region, { missing: true, wp: true, offset: 0, length: 8 * PAGE })
  const bytes = new Uint8Array(region.buffer)
  const served = [2, 3, 4, 5].map((page) => bytes[page * PAGE + 5])
  t.deepEqual(served, expected(4, 2), 'the pages the source served before are still served by it')
  uffd.close()
  region.close()
})

test('a registration that would leave a kept source no faults to serve is refused, saying what to write', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region, { source: Source.bytes(patternPage(0, PAGE, 4)) })
  const error = t.throws(() => uffd.register(region, { wp: true }), { instanceOf: UffdError })
  t.is(error?.code, 'EINVAL')
  t.is(error?.syscall, 'UFFDIO_REGISTER')
  t.regex(error?.message ?? '', /served by the bytes source .* missing: true/)
  t.deepEqual(fifthBytes(region), expected(4), 'the refused call changed nothing: the source serves on')
  uffd.close()
  region.close()
})

test('registering a served range again with another source is refused (EEXIST); the same Source object is accepted', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  const source = Source.bytes(patternPage(0, PAGE, 4))
  uffd.register(region, { source })
  const error = t.throws(() => uffd.register(region, { source: Source.zero() }), { instanceOf: UffdError })
  t.is(error?.code, 'EEXIST')
  t.regex(error?.message ?? '', /served by the bytes source .*unregister the range first/)
  t.notThrows(() => uffd.register(region, { source, missing: true, wp: true, readahead: { pages: 4 } }))
  t.deepEqual(fifthBytes(region), expected(4))
  t.is(uffd.stats.faults.missing, 1, 'the new readahead of the same source applies')
  uffd.unregister(region)
  t.notThrows(() => uffd.register(region, { source: Source.zero() }), 'after unregister, another source is fine')
  uffd.close()
  region.close()
})
