// What a new user meets first (issue 17): the calls a first program makes, tried as written in the
// README, must say what went wrong in terms of the call, and never lose what was asked before.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { Region, Source, UffdError, Userfaultfd } from 'userfaultfd'
import { patternByte, patternPage, withReader } from './helpers/harness'

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

test('an offset past the end of a region is reported as such, naming the offset and the region size', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(PAGE)
  const past = /offset 8192 is past the end of the region \(4096 bytes\)/
  t.throws(() => uffd.register(region, { offset: 2 * PAGE }), { message: past }, 'register')
  t.throws(() => uffd.unregister(region, { offset: 2 * PAGE }), { message: past }, 'unregister')
  uffd.register(region)
  t.throws(() => uffd.zero(region, 2 * PAGE, PAGE), { message: past }, 'zero')
  t.throws(() => uffd.copy(region, 2 * PAGE, new Uint8Array(PAGE)), { message: past }, 'copy')
  t.throws(() => region.discard(2 * PAGE, PAGE), { message: past }, 'discard')
  t.throws(() => region.bytes(2 * PAGE), { message: past }, 'bytes')
  t.throws(() => uffd.zero(region, 0, 2 * PAGE), {
    message: /length 8192 from offset 0 runs past the end of the region \(4096 bytes\): at most 4096/,
  })
  uffd.close()
  region.close()
})

// As Node: a value of the wrong type is a TypeError ERR_INVALID_ARG_TYPE; a number out of its
// bounds (negative, not an integer, zero where a size must be positive, past the end) is a
// RangeError ERR_OUT_OF_RANGE, whose message names the argument and the bound.
const wrongType = { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }
const outOfRange = (bound: RegExp) => ({ instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: bound })

test('a region size that is negative, zero or too large is one kind of error, naming the size and its bound', (t) => {
  const makers = [(size: number) => Region.anonymous(size), (size: number) => Region.shmem(size), (size: number) => Region.hugetlb(size)]
  for (const make of makers) {
    for (const size of [-1, 0, 0.5, 2 ** 52, 2 ** 53]) {
      t.throws(() => make(size), outOfRange(/"size" .*>= 1 && <= \d+/), `${make} of ${size}`)
    }
    t.throws(() => make('4096' as unknown as number), wrongType)
  }
})

test('register and unregister: a negative, zero or too-large offset or length is one kind of error', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(PAGE)
  for (const call of [(o: object) => uffd.register(region, o), (o: object) => uffd.unregister(region, o)]) {
    t.throws(() => call({ length: -1 }), outOfRange(/"options.length"/))
    t.throws(() => call({ length: 0 }), outOfRange(/length 0 is not positive: a range is at least one page \(4096 bytes\)/))
    t.throws(() => call({ length: 2 * PAGE }), outOfRange(/length 8192 from offset 0 runs past the end of the region \(4096 bytes\)/))
    t.throws(() => call({ length: 2 ** 53 }), outOfRange(/"options.length"/))
    t.throws(() => call({ offset: -PAGE }), outOfRange(/"options.offset"/))
    t.throws(() => call({ offset: 2 * PAGE }), outOfRange(/offset 8192 is past the end/))
    t.throws(() => call({ length: '4096' }), wrongType)
  }
  uffd.register(region)
  const page = new Uint8Array(PAGE)
  t.throws(() => uffd.copy(region, 0, new Uint8Array(0)), outOfRange(/bytes is empty: a copy maps at least one page/))
  t.throws(() => uffd.copy(region, -PAGE, page), outOfRange(/"offset"/))
  t.throws(() => uffd.zero(region, 0, 0), outOfRange(/length 0/))
  t.throws(() => uffd.zero(region, 0, -PAGE), outOfRange(/"length"/))
  t.throws(() => uffd.zero(region, 0, 2 * PAGE), outOfRange(/runs past the end/))
  t.throws(() => region.discard(0, 0), outOfRange(/length 0/))
  t.throws(
    () => uffd.zero(region, 100, PAGE),
    { instanceOf: UffdError, code: 'EINVAL', message: /offset 100 is not a multiple of the page size 4096/ },
    'misaligned is its own kind: EINVAL, as the kernel says',
  )
  uffd.close()
  region.close()
})

test("a handler's fault.copy and fault.zero with an empty or negative length throw the same RangeError (a long one is clipped to the region)", async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(2 * PAGE)
  uffd.register(region)
  const thrown: unknown[] = []
  uffd.handle((fault) => {
    for (const bad of [() => fault.copy(new Uint8Array(0)), () => fault.zero({ length: 0 }), () => fault.zero({ length: -PAGE })]) {
      try {
        bad()
      } catch (error) {
        thrown.push(error)
      }
    }
    fault.copy(patternPage(fault.offset, PAGE))
  })
  await withReader([uffd, region], async (reader) => {
    const { bytes } = await reader.read(region, { offsets: [5] })
    t.deepEqual(bytes, [patternByte(0, PAGE, 5)])
  })
  t.is(thrown.length, 3)
  for (const error of thrown) t.like(error, { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' })
})

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
    await withReader([uffd, region], async (reader) => {
      const { bytes } = await reader.read(region, { offsets: [5, PAGE + 5, 2 * PAGE + 5] })
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

test('feature and ioctl lists are one type across the API, a read-only set that JSON prints as an array', (t) => {
  const probe = Userfaultfd.probe()
  const uffd = new Userfaultfd({ features: ['EVENT_REMOVE'] })
  const region = Region.anonymous(PAGE)
  const { ioctls } = uffd.register(region)
  const lists = [probe.features, probe.ioctls, uffd.features, ioctls]
  for (const list of lists) {
    t.is(Object.getPrototypeOf(list), Object.getPrototypeOf(probe.features), 'the same class everywhere')
    t.true(list instanceof Set)
    t.deepEqual(JSON.parse(JSON.stringify(list)), [...list], 'JSON prints the names, not {}')
    t.throws(() => (list as unknown as Set<string>).add('X'), { instanceOf: TypeError })
    t.throws(() => (list as unknown as Set<string>).delete([...list][0] as string), { instanceOf: TypeError })
  }
  t.true(probe.features.has('THREAD_ID'))
  t.true(probe.features.includes('THREAD_ID'), 'what code written for arrays asked still works')
  t.true(uffd.features.has('EVENT_REMOVE'))
  t.true(ioctls.has('COPY'))
  t.deepEqual(JSON.parse(JSON.stringify(uffd.register(region))), { ioctls: [...ioctls] })
  const printed = JSON.parse(JSON.stringify(probe))
  t.deepEqual(printed, { api: 0xaa, features: [...probe.features], ioctls: [...probe.ioctls] })
  t.true(printed.features.length > 5)
  // A set the API gave is accepted where the API takes a list.
  const again = new Userfaultfd({ features: uffd.features })
  t.true(again.features.has('EVENT_REMOVE'))
  again.close()
  uffd.close()
  region.close()
})

test('what the API returns prints in JSON: stats, latency, a prefetch, a source, an error', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  const source = Source.bytes(patternPage(0, PAGE, 4))
  uffd.register(region, { source })
  const prefetched = await uffd.prefetch(region)
  t.deepEqual(JSON.parse(JSON.stringify(prefetched)), prefetched)
  const stats = uffd.stats
  t.deepEqual(JSON.parse(JSON.stringify(stats)), stats)
  t.is(JSON.parse(JSON.stringify(uffd.latency())).count, 0)
  t.deepEqual(JSON.parse(JSON.stringify(source)), { kind: 'bytes', size: 4 * PAGE })
  const error = t.throws(() => uffd.copy(region, 100, new Uint8Array(PAGE))) as UffdError
  t.like(JSON.parse(JSON.stringify(error)), { code: 'EINVAL', syscall: 'UFFDIO_COPY' })
  uffd.close()
  region.close()
})

test('the API reference builds without a warning (treatWarningsAsErrors), and no @internal member is in it or in the published types', (t) => {
  const root = join(__dirname, '..', '..', '..')
  const out = mkdtempSync(join(tmpdir(), 'uffd-docs-'))
  try {
    const run = spawnSync(process.execPath, [join(root, 'node_modules', 'typedoc', 'bin', 'typedoc'), '--out', out], {
      cwd: root,
      encoding: 'utf8',
      timeout: 110_000,
    })
    const said = `${run.stdout}${run.stderr}`
    t.is(run.status, 0, said)
    t.notRegex(said, /warning/i)
    const pages = readdirSync(out, { recursive: true, encoding: 'utf8' }).filter((name) => name.endsWith('.html'))
    t.true(pages.some((name) => name.endsWith('Userfaultfd.html')))
    const html = pages.map((name) => readFileSync(join(out, name), 'utf8')).join('\n')
    for (const internal of ['sayAtExit', 'fromAdoption', 'handlerGeneration', 'readRaw']) {
      t.false(html.includes(internal), `${internal} is in the API reference`)
    }
    const published = readFileSync(join(root, 'dist', 'lib', 'userfaultfd.d.ts'), 'utf8')
    for (const internal of ['sayAtExit', 'fromAdoption', 'handlerGeneration']) {
      t.false(published.includes(internal), `${internal} is in the published userfaultfd.d.ts`)
    }
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
})

// The handler modules handleInWorker takes, as the README shows them: each serves page i filled
// with a byte of its own, so the test sees which export served.
const handlerModules: Array<[string, string, number]> = [
  ['default.mjs', 'export default function (fault) { FILL(11) }', 11],
  ['named.mjs', 'export function handler(fault) { FILL(12) }', 12],
  ['default.cjs', 'module.exports = function (fault) { FILL(13) }', 13],
  ['named.cjs', 'exports.handler = function (fault) { FILL(14) }', 14],
  ['object.cjs', 'module.exports = { handler(fault) { FILL(15) } }', 15],
  // An object built at run time: Node's static scan of CommonJS names no export `handler` here.
  ['built.cjs', 'const api = {}; api.handler = function (fault) { FILL(17) }; module.exports = api', 17],
  ['transpiled.cjs', 'Object.defineProperty(exports, "__esModule", { value: true }); exports.default = function (fault) { FILL(16) }', 16],
]
const fill = (seed: number) => `fault.copy(new Uint8Array(fault.region.pageSize).fill(fault.offset / fault.region.pageSize + ${seed}))`

for (const [name, source, seed] of handlerModules) {
  test(`handleInWorker serves with a handler module like ${name}: ${source.slice(0, 40)}...`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'uffd-handler-'))
    const path = join(dir, name)
    writeFileSync(
      path,
      source.replace(/FILL\((\d+)\)/, (_, n) => fill(Number(n))),
    )
    const uffd = new Userfaultfd()
    const region = Region.anonymous(3 * PAGE)
    uffd.register(region)
    try {
      const served = await uffd.handleInWorker(path)
      const bytes = new Uint8Array(region.buffer)
      t.deepEqual(
        [bytes[0], bytes[PAGE + 9], bytes[2 * PAGE + 4095]],
        [seed, seed + 1, seed + 2],
        'this thread read what the module served',
      )
      served.off()
    } finally {
      uffd.close()
      region.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
}

test('a handler module with neither a default export nor `handler` is refused, saying which exports it needs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-handler-'))
  const path = join(dir, 'neither.cjs')
  writeFileSync(path, 'module.exports = { serve(fault) {} }')
  const uffd = new Userfaultfd()
  try {
    const error = await t.throwsAsync(uffd.handleInWorker(path), { instanceOf: UffdError })
    t.is(error?.code, 'ERR_UFFD_WORKER')
    t.regex(error?.message ?? '', /as its default export or as `handler`/)
  } finally {
    uffd.close()
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
    { instanceOf: UffdError, code: 'EINVAL' },
    'not a multiple of the page: EINVAL',
  )
})
