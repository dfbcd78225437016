// Several readers of one userfaultfd (`readers: N`): faults of many threads served natively by N
// loop threads, each page once, events applied before any fault read after them.
import test from 'ava'
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { nextError, patternByte, patternPage, Reader, within } from './helpers/harness'

const pager = require.resolve('./helpers/pager')

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

test('handleInWorker({ workers: 3 }) starts three workers that serve side by side, each page once; off() ends them all', async (t) => {
  const pages = 256
  const uffd = new Userfaultfd()
  const region = Region.anonymous((pages + 16) * PAGE)
  uffd.register(region)
  const tally = new Int32Array(new SharedArrayBuffer(4 * 8))
  const served = await within(uffd.handleInWorker(pager, { workers: 3, workerData: { mode: 'copy', seed: 7, tally } }), 'three workers')
  t.is(Atomics.load(tally, 0), 3, 'three workers loaded the module')
  const readers = [new Reader(), new Reader(), new Reader(), new Reader()]
  try {
    const slices = readers.map((reader, index) => {
      const offsets: number[] = []
      for (let page = index; page < pages; page += readers.length) offsets.push(page * PAGE + 5)
      return reader.read(region, { offsets }).then(({ bytes }) => ({ offsets, bytes }))
    })
    for (const { offsets, bytes } of await Promise.all(slices)) {
      t.deepEqual(
        bytes,
        offsets.map((offset) => patternByte(offset - 5, PAGE, 5, 7)),
      )
    }
    const handled = [1, 2, 3].map((slot) => Atomics.load(tally, slot))
    t.is(
      handled.reduce((sum, count) => sum + count, 0),
      pages,
      `one dispatch per page among the workers (${handled.join(', ')})`,
    )
    t.is(uffd.stats.inFlight, 0)
    served.off()
    // Once every worker of the group is gone (they end asynchronously), a new fault waits for a
    // handler, and the owner hears so.
    let code: string | undefined
    // A fault handed to a worker as it ends gets the fallback (ERR_UFFD_HANDLER_GONE): go on.
    for (let page = pages; page < pages + 16 && (code === undefined || code === 'ERR_UFFD_HANDLER_GONE'); page++) {
      const heard = nextError(uffd).then((error) => error.code)
      const reader = readers[page % readers.length] as Reader
      const read = reader.read(region, { offsets: [page * PAGE] }).then(() => undefined)
      code = await Promise.race([heard, read.catch(() => undefined)])
    }
    t.is(code, 'ERR_UFFD_NO_HANDLER', 'off() removed every worker of the group')
  } finally {
    uffd.close()
    await Promise.all(readers.map((reader) => reader.terminate()))
    region.close()
  }
})

test('handleInWorker({ workers }) must be an integer from 1 to 64', async (t) => {
  const uffd = new Userfaultfd()
  await t.throwsAsync(async () => uffd.handleInWorker(pager, { workers: 0 }), { code: 'ERR_OUT_OF_RANGE' })
  await t.throwsAsync(async () => uffd.handleInWorker(pager, { workers: 65 }), { code: 'ERR_OUT_OF_RANGE' })
  uffd.close()
})
