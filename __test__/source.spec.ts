// Native page sources: faults resolved on the loop thread with no JavaScript, so the main thread
// reads the memory with no handler and no worker at all; readahead maps several pages per fault.

import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { Region, Source, UffdError, Userfaultfd } from 'userfaultfd'
import { avaCases } from './cases/ava'
import { sourceCases } from './cases/sources'
import { nextError, patternByte, patternPage, withToucher } from './helpers/harness'

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
  await withToucher([uffd, region], async (toucher) => {
    const offsets = [0, 1, 2, 3, 4, 5, 6, 7].map((page) => page * PAGE + 5).concat([4 * PAGE + 99, 4 * PAGE + 100])
    const { bytes: read } = await toucher.read(region, { offsets })
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
  await withToucher([uffd, region], async (toucher) => {
    const offsets = [0, 1, 2, 3, 4, 5].map((page) => page * PAGE + 5)
    const { bytes: read } = await toucher.read(region, { offsets })
    t.deepEqual(
      read,
      offsets.map((_, page) => patternByte(page * PAGE, PAGE, 5, page % 2 === 0 ? 1 : 0)),
    )
    uffd.writeProtect(region, 0, PAGE, true)
    await toucher.read(region, { offsets: [7], write: 1 })
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
  await withToucher([uffd, region], async (toucher) => {
    const prefetch = uffd.prefetch(region, undefined, { chunkPages: 1 })
    const offsets = Array.from({ length: 64 }, (_, i) => (big - 1 - i * 97) * PAGE + 5)
    const { bytes } = await toucher.read(region, { offsets })
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
  await withToucher([uffd, region], async (toucher) => {
    const { bytes } = await toucher.read(region, { offsets: [4 * PAGE + 5, 6 * PAGE + 5] })
    t.deepEqual(bytes, [patternByte(4 * PAGE, PAGE, 5), patternByte(6 * PAGE, PAGE, 5, 3)])
    t.deepEqual(handled, [6])
  })
})

test('a native source’s read error resolves the fault at once by the fallback and emits ERR_UFFD_SOURCE with the errno and the file', async (t) => {
  // /proc/self/mem from the last page of the main thread's stack on: the page after it is never
  // mapped (mappings go below the stack), so pread fails there with EIO, and only there.
  const stack = readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .find((line) => line.endsWith('[stack]'))
  const stackEnd = Number.parseInt(String(stack).split(/[- ]/)[1] ?? '', 16)
  t.true(Number.isSafeInteger(stackEnd), `the stack in /proc/self/maps: ${stack}`)
  const source = Source.file('/proc/self/mem', { offset: stackEnd - PAGE })
  const uffd = new Userfaultfd({ timeoutMs: 20_000 })
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region, { source })
  const handled: number[] = []
  uffd.handle((fault) => {
    handled.push(fault.offset)
  })
  await withToucher([uffd, region], async (toucher) => {
    const error = nextError(uffd, 5_000)
    const started = Date.now()
    t.deepEqual((await toucher.read(region, { offsets: [PAGE + 3] })).bytes, [0], 'the fallback (ZEROPAGE) answered')
    t.true(Date.now() - started < 5_000, 'at once, not after timeoutMs')
    const said: UffdError = await error
    t.is(said.code, 'ERR_UFFD_SOURCE')
    t.regex(said.message, /\/proc\/self\/mem/)
    const cause = said.cause as UffdError
    t.is(cause.code, 'EIO')
    t.is(cause.errno, -5)
    t.is(cause.syscall, 'pread')
    t.deepEqual(handled, [], 'the failed fault is not handed to the handler as an ordinary one')
    t.is(uffd.stats.fallbacks, 1)
  })
})

const expected = (pages: number, from = 0) => Array.from({ length: pages }, (_, page) => patternByte((from + page) * PAGE, PAGE, 5))

/** An object behind plain HTTP Range GETs on loopback, as a store serves it. */
async function serveObject(body: Uint8Array): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((request, response) => {
    const headers = {
      'content-type': 'application/octet-stream',
      etag: '"v1"',
      'last-modified': new Date(0).toUTCString(),
      'accept-ranges': 'bytes',
    }
    const range = /bytes=(\d+)-(\d*)/.exec(request.headers.range ?? '')
    if (!range) {
      response.writeHead(200, { ...headers, 'content-length': body.length })
      response.end(request.method === 'HEAD' ? undefined : body)
      return
    }
    const start = Number(range[1])
    const end = Math.min(range[2] ? Number(range[2]) : body.length - 1, body.length - 1)
    response.writeHead(206, { ...headers, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${body.length}` })
    response.end(request.method === 'HEAD' ? undefined : body.subarray(start, end + 1))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/snapshots/vm.mem`,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve())
        // The source keeps its connections alive (a pool), and a readahead may have just begun.
        server.closeAllConnections()
      }),
  }
}

test('Source.objectStore says how big the object is (size, and objectStats.size), like every source with an end', async (t) => {
  const body = patternPage(0, PAGE, 3)
  const object = new Uint8Array(3 * PAGE + 100)
  object.set(body)
  const store = await serveObject(object)
  try {
    const source = await Source.objectStore(store.url, { chunkSize: PAGE, concurrency: 2 })
    t.is(source.kind, 'objectStore')
    const size: number = source.size // typed as a number: no `?? 0`, no `!`
    t.is(size, 3 * PAGE + 100)
    t.is(source.objectStats.size, 3 * PAGE + 100)
    const uffd = new Userfaultfd()
    const region = Region.anonymous(4 * PAGE)
    uffd.register(region, { source })
    // Read from another thread: this one serves the object over HTTP.
    await withToucher([uffd, region], async (toucher) => {
      const { bytes } = await toucher.read(region, { offsets: [5, PAGE + 5, 2 * PAGE + 5] })
      t.deepEqual(bytes, expected(3), 'the object serves the region')
    })
  } finally {
    await store.close()
  }
})

test('every source says its size: bytes, a file past its offset, layers; zeros and the page cache have none', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-new-user-'))
  try {
    const file = join(dir, 'data')
    writeFileSync(file, new Uint8Array(5 * PAGE))
    t.is(Source.bytes(new Uint8Array(3 * PAGE + 1)).size, 3 * PAGE + 1)
    t.is(Source.file(file).size, 5 * PAGE)
    t.is(Source.file(file, { offset: 2 * PAGE }).size, 3 * PAGE)
    t.is(Source.layers([file]).size, 5 * PAGE)
    t.is(Source.zero().size, undefined)
    t.is(Source.pageCache().size, undefined)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('an object source with no concurrency or an empty chunk is refused as a number out of range, before any request', async (t) => {
  for (const options of [{ concurrency: 0 }, { chunkSize: 0 }, { concurrency: -1 }]) {
    const [name] = Object.keys(options)
    await t.throwsAsync(Source.objectStore('http://127.0.0.1:1/object', options), {
      instanceOf: RangeError,
      code: 'ERR_OUT_OF_RANGE',
      message: new RegExp(`"options.${name}" .*>= 1`),
    })
  }
  await t.throwsAsync(
    Source.objectStore('http://127.0.0.1:1/object', { chunkSize: 100 }),
    {
      instanceOf: UffdError,
      code: 'EINVAL',
      message: /chunk size 100 is not a multiple of the page size \(4096 bytes\): give whole pages, such as 4194304/,
    },
    'not a multiple of the page: EINVAL, with the page size and a size that works',
  )
})

// Sources made wrong (Source.file of a directory, of a file that cannot be read, of none): the case
// table both runtimes run (cases/sources.ts; Bun runs it in bun/sources.test.ts).
avaCases(sourceCases)
