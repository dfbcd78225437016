// Several readers of one userfaultfd (`readers: N`): faults of many threads served natively by N
// loop threads, each page once, events applied before any fault read after them.
import test from 'ava'
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { avaCases } from './cases/ava'
import { readerCases } from './cases/readers'
import { nextError, patternByte, patternPage, Toucher, within } from './helpers/harness'

const pager = require.resolve('./helpers/pager')

const PAGE = 4096

test('readers: 3 serve the faults of four threads from a native source, every byte right, each page once', async (t) => {
  const pages = 512
  const uffd = new Userfaultfd({ readers: 3 })
  const region = Region.anonymous(pages * PAGE)
  uffd.register(region, { source: Source.bytes(patternPage(0, PAGE, pages)) })
  t.is(uffd.stats.readers, 3)
  const touchers = [new Toucher(), new Toucher(), new Toucher(), new Toucher()]
  try {
    const slices = touchers.map((toucher, index) => {
      const offsets: number[] = []
      // Interleaved pages: the four threads fault side by side in the same range.
      for (let page = index; page < pages; page += touchers.length) offsets.push(page * PAGE, page * PAGE + PAGE - 1)
      return toucher.read(region, { offsets }).then(({ bytes }) => ({ offsets, bytes }))
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
    await Promise.all(touchers.map((toucher) => toucher.terminate()))
    uffd.close()
    region.close()
  }
})

test('readers: 2 with EVENT_REMOVE: a page discarded and touched again comes back from the source', async (t) => {
  const uffd = new Userfaultfd({ readers: 2, features: ['EVENT_REMOVE'] })
  const region = Region.anonymous(16 * PAGE)
  uffd.register(region, { source: Source.bytes(patternPage(0, PAGE, 16)) })
  const toucher = new Toucher()
  try {
    const offsets = Array.from({ length: 16 }, (_, page) => page * PAGE)
    const expected = offsets.map((offset) => patternByte(offset, PAGE, 0))
    t.deepEqual((await toucher.read(region, { offsets })).bytes, expected)
    // Each discard is an event one of the readers must read before the refault is served.
    t.deepEqual((await toucher.read(region, { offsets, discard: { offset: 3 * PAGE, times: 20 } })).bytes, expected)
    t.true(uffd.stats.events >= 20)
  } finally {
    await toucher.terminate()
    uffd.close()
    region.close()
  }
})

test('readers must be an integer from 1 to 64', (t) => {
  t.throws(() => new Userfaultfd({ readers: 0 }), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new Userfaultfd({ readers: 65 }), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new Userfaultfd({ readers: 1.5 }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
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
  const touchers = [new Toucher(), new Toucher(), new Toucher(), new Toucher()]
  try {
    const slices = touchers.map((toucher, index) => {
      const offsets: number[] = []
      for (let page = index; page < pages; page += touchers.length) offsets.push(page * PAGE + 5)
      return toucher.read(region, { offsets }).then(({ bytes }) => ({ offsets, bytes }))
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
    served.off()
    // From off() on no fault is handed to the group, though its workers end asynchronously: the
    // very next fault waits for a handler, and the owner hears so.
    const heard = nextError(uffd).then((error) => error.code)
    const read = (touchers[0] as Toucher).read(region, { offsets: [pages * PAGE] }).then(() => 'served')
    const code = await Promise.race([heard, read.catch(() => 'failed')])
    t.is(code, 'ERR_UFFD_NO_HANDLER', 'off() removed every worker of the group')
  } finally {
    uffd.close()
    await Promise.all(touchers.map((toucher) => toucher.terminate()))
    region.close()
  }
})

test('a self-fault is said before its thread runs again: a close() right after the read still hears ERR_UFFD_SELF_FAULT', (t) => {
  for (const readers of [1, 2]) {
    const uffd = new Userfaultfd({ readers })
    const region = Region.anonymous(4 * PAGE)
    uffd.register(region)
    const codes: string[] = []
    uffd.on('error', (error) => codes.push(String(error.code)))
    uffd.handle((fault) => {
      fault.zero()
    })
    // This thread is the handler's: its own fault gets the fallback, and the word is on the owner.
    t.is(new Uint8Array(region.buffer)[PAGE], 0)
    uffd.close()
    region.close()
    t.deepEqual(codes, ['ERR_UFFD_SELF_FAULT'], `readers: ${readers}`)
  }
})

// Handler workers beside several readers: the case table both runtimes run (cases/readers.ts; Bun
// runs it in bun/readers.test.ts).
avaCases(readerCases)
