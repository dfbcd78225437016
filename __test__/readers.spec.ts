// Several readers of one userfaultfd (`readers: N`): faults of many threads served natively by N
// loop threads, each page once, events applied before any fault read after them.
import test from 'ava'
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { patternByte, patternPage, Reader } from './helpers/harness'

const PAGE = 4096

test('readers: 3 serve the faults of four threads from a native source, every byte right, each page once', async (t) => {
  const pages = 512
  const uffd = new Userfaultfd({ readers: 3 })
  const region = Region.anonymous(pages * PAGE)
  uffd.register(region, { source: Source.bytes(patternPage(0, PAGE, pages)) })
  t.is(uffd.stats.readers, 3)
  const readers = [new Reader(), new Reader(), new Reader(), new Reader()]
  try {
    const slices = readers.map((reader, index) => {
      const offsets: number[] = []
      // Interleaved pages: the four threads fault side by side in the same range.
      for (let page = index; page < pages; page += readers.length) offsets.push(page * PAGE, page * PAGE + PAGE - 1)
      return reader.read(region, { offsets }).then(({ bytes }) => ({ offsets, bytes }))
    })
    for (const { offsets, bytes } of await Promise.all(slices)) {
      t.deepEqual(
        bytes,
        offsets.map((offset) => patternByte(offset - (offset % PAGE), PAGE, offset % PAGE)),
      )
    }
    const stats = uffd.stats
    t.is(stats.bytesMapped, pages * PAGE, 'every page mapped once')
    t.is(stats.native, stats.faults.missing, 'every fault message served natively')
    t.is(stats.inFlight, 0)
  } finally {
    await Promise.all(readers.map((reader) => reader.terminate()))
    uffd.close()
    region.close()
  }
})

test('readers: 2 with EVENT_REMOVE: a page discarded and touched again comes back from the source', async (t) => {
  const uffd = new Userfaultfd({ readers: 2, features: ['EVENT_REMOVE'] })
  const region = Region.anonymous(16 * PAGE)
  uffd.register(region, { source: Source.bytes(patternPage(0, PAGE, 16)) })
  const reader = new Reader()
  try {
    const offsets = Array.from({ length: 16 }, (_, page) => page * PAGE)
    const expected = offsets.map((offset) => patternByte(offset, PAGE, 0))
    t.deepEqual((await reader.read(region, { offsets })).bytes, expected)
    // Each discard is an event one of the readers must read before the refault is served.
    t.deepEqual((await reader.read(region, { offsets, discard: { offset: 3 * PAGE, times: 20 } })).bytes, expected)
    t.true(uffd.stats.events >= 20)
  } finally {
    await reader.terminate()
    uffd.close()
    region.close()
  }
})

test('readers must be an integer from 1 to 64', (t) => {
  t.throws(() => new Userfaultfd({ readers: 0 }), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new Userfaultfd({ readers: 65 }), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new Userfaultfd({ readers: 1.5 }), { instanceOf: TypeError })
  const uffd = new Userfaultfd()
  t.is(uffd.stats.readers, 1)
  uffd.close()
})
