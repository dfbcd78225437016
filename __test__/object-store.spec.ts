// Source.objectStore against a real distributed object store (SeaweedFS, started here on loopback
// ports and killed by pid at the end) and against plain HTTP Range from a node:http server. Every
// client is given its endpoint and credentials explicitly; no request leaves the loopback address.
// The network parts run in processes of their own (net-child.ts), so they answer while this
// thread sleeps in a fault. Every byte read is checked (object-data.ts).
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import test from 'ava'
import { type ObjectStoreSourceOptions, Region, Source, type UffdError, Userfaultfd } from 'userfaultfd'
import { nextError, Toucher, withHugePages, within } from './helpers/harness'
import { NetChild } from './helpers/net'
import { type Census, census, objectBytes, PAGE, serveSource } from './helpers/object-data'
import { Seaweed } from './helpers/seaweed'
import { seaweedTests } from './helpers/seaweed-tests'

// Nothing here may look for credentials or ask an instance-metadata service.
process.env.AWS_EC2_METADATA_DISABLED = 'true'
for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_ENDPOINT_URL', 'AWS_PROFILE'])
  delete process.env[name]

const MiB = 1024 * 1024
const BUCKET = 'uffd-test'
const SIZE = 10 * MiB + 1234 // neither whole chunks nor whole pages
const CHUNK = MiB
const dir = mkdtempSync(join(tmpdir(), 'uffd-object-'))
const { weedPath, run } = seaweedTests('object-store')

let weed: Seaweed | undefined
const children: NetChild[] = []
const closers: (() => void)[] = []

test.before(async () => {
  if (!weedPath) return
  weed = await Seaweed.server()
  await weed.bucket(BUCKET)
  await weed.put(BUCKET, 'ten.bin', objectBytes(SIZE, 1))
})

test.after.always(async () => {
  for (const close of closers) close()
  for (const child of children) child.stop()
  await weed?.stop()
  rmSync(dir, { recursive: true, force: true })
})

function store(): Seaweed {
  if (!weed) throw new Error('SeaweedFS is not running')
  return weed
}

/** A source over the SeaweedFS S3 gateway (or `endpoint`), anonymous, 1 MiB chunks. */
function s3(key: string, options: ObjectStoreSourceOptions = {}): Promise<Source> {
  return Source.objectStore(`s3://${BUCKET}/${key}`, { endpoint: store().s3, anonymous: true, chunkSize: CHUNK, env: {}, ...options })
}

/** A userfaultfd with a region of `size` (rounded up to pages) served by `source`. */
const serve = (source: Source, size: number, options: { timeoutMs?: number; fallthrough?: boolean } = {}) =>
  serveSource(source, size, closers, options)

/** A census taken by a worker thread, leaving this thread free (to kill a store, say). */
function censusInWorker(region: Region, objectSize: number, seeds: number[]): Promise<Census> {
  const worker = new Worker(join(__dirname, 'helpers', 'object-data.js'))
  return new Promise<Census>((resolve, reject) => {
    worker.once('message', (message: Census | { error: string }) => {
      if ('error' in message) reject(new Error(message.error))
      else resolve(message)
    })
    worker.once('error', reject)
    worker.postMessage({ shared: region.share(), objectSize, seeds })
  }).finally(() => worker.terminate())
}

async function start(mode: 'http' | 'proxy', arg: string): Promise<NetChild> {
  const child = await NetChild.start(mode, arg)
  children.push(child)
  return child
}

const pagesOf = (bytes: number) => Math.ceil(bytes / PAGE)

run('s3, path style: the main thread reads every byte of the object with no handler, one request per chunk', async (t) => {
  const source = await s3('ten.bin')
  t.is(source.kind, 'objectStore')
  t.is(source.objectStats?.size, SIZE)
  t.regex(source.objectStats?.etag ?? '', /^"[0-9a-f]+"$/)
  const { uffd, region, errors } = serve(source, SIZE + 4 * PAGE)
  const seen = census(region, SIZE, [1])
  t.is(seen.wrong, 0, `first wrong page ${seen.firstWrong}`)
  t.is(seen.bySeed[1], pagesOf(SIZE))
  t.is(seen.zero, region.size / PAGE - pagesOf(SIZE), 'pages past the end are zeros')
  const stats = source.objectStats
  t.is(stats?.requests, Math.ceil(SIZE / CHUNK), 'one request per chunk')
  t.is(stats?.bytesFetched, SIZE)
  t.true(uffd.stats.faults.missing < pagesOf(SIZE) / 32, `${uffd.stats.faults.missing} faults`)
  t.deepEqual(errors, [])
})

run('faults of one chunk from four threads at once make one request, and each is served when it arrives', async (t) => {
  const proxy = await start('proxy', store().s3.slice('http://'.length))
  await proxy.send({ delay: 100 })
  const source = await s3('ten.bin', { endpoint: proxy.url })
  const { region } = serve(source, SIZE)
  const touchers = [new Toucher(), new Toucher(), new Toucher(), new Toucher()]
  closers.push(() => {
    for (const toucher of touchers) void toucher.terminate()
  })
  const pages = [3 * 256 + 7, 3 * 256 + 100, 3 * 256 + 200, 3 * 256 + 255]
  const reads = await within(
    Promise.all(touchers.map((toucher, i) => toucher.read(region, { offsets: [(pages[i] as number) * PAGE] }))),
    'four readers',
  )
  const expected = objectBytes(SIZE, 1)
  for (const [i, read] of reads.entries()) t.is(read.bytes[0], expected[(pages[i] as number) * PAGE])
  t.is(source.objectStats?.requests, 1)
  t.is(source.objectStats?.faults, 4)
  await proxy.send({ delay: 0 })
})

run('s3, virtual-hosted style: bucket.localhost resolves to loopback without DNS', async (t) => {
  const port = new URL(store().s3).port
  const source = await s3('ten.bin', { endpoint: `http://localhost:${port}`, virtualHostedStyle: true })
  const { region } = serve(source, 2 * CHUNK)
  t.is(census(region, SIZE, [1]).bySeed[1], (2 * CHUNK) / PAGE)
})

run('credentials from options or AWS_* variables sign the requests; a bad secret gets 403 (EACCES) when the source is made', async (t) => {
  const identity = { accessKey: 'AKIDUFFDTEST', secretKey: 'uffd-test-secret' }
  const secured = await Seaweed.server({ identity })
  try {
    await secured.bucket(BUCKET)
    await secured.put(BUCKET, 'secret.bin', objectBytes(2 * MiB, 3))
    const url = `s3://${BUCKET}/secret.bin`
    const good = await Source.objectStore(url, {
      endpoint: secured.s3,
      credentials: { accessKeyId: identity.accessKey, secretAccessKey: identity.secretKey },
      chunkSize: CHUNK,
    })
    const { region } = serve(good, 2 * MiB)
    t.is(census(region, 2 * MiB, [3]).bySeed[3], (2 * MiB) / PAGE)
    const fromEnv = await Source.objectStore(url, {
      env: {
        AWS_ENDPOINT_URL: secured.s3,
        AWS_REGION: 'us-east-1',
        AWS_ACCESS_KEY_ID: identity.accessKey,
        AWS_SECRET_ACCESS_KEY: identity.secretKey,
      },
    })
    t.is(fromEnv.objectStats?.size, 2 * MiB)
    const refused = await t.throwsAsync(
      Source.objectStore(url, { endpoint: secured.s3, credentials: { accessKeyId: identity.accessKey, secretAccessKey: 'wrong' } }),
    )
    t.is((refused as UffdError).code, 'EACCES')
    t.is((refused as UffdError).status, 403)
    t.regex(refused?.message ?? '', /403/)
  } finally {
    await secured.stop()
  }
})

run('a source with no credentials and no anonymous: true fails with a clear error and sends nothing', async (t) => {
  const proxy = await start('proxy', store().s3.slice('http://'.length))
  const before = await proxy.send({})
  const error = await t.throwsAsync(Source.objectStore(`s3://${BUCKET}/ten.bin`, { endpoint: proxy.url, env: {} }))
  t.is((error as UffdError).code, 'EINVAL')
  t.regex(error?.message ?? '', /no credentials.*AWS_ACCESS_KEY_ID.*anonymous: true.*instance metadata is never asked/s)
  t.is((await proxy.send({})).connections, before.connections, 'no connection was made')
})

run('a missing object (404), a missing bucket, and an endpoint nobody listens on fail when the source is made', async (t) => {
  const missing = await t.throwsAsync(s3('no-such-object'))
  t.is((missing as UffdError).code, 'ENOENT')
  t.is((missing as UffdError).status, 404)
  t.regex(missing?.message ?? '', /HTTP 404: no such object \(check the bucket or container, and the key\)/)
  const bucket = await t.throwsAsync(Source.objectStore('s3://no-such-bucket/x', { endpoint: store().s3, anonymous: true }))
  t.is((bucket as UffdError).status, 404)
  const closed = await t.throwsAsync(s3('ten.bin', { endpoint: 'http://127.0.0.1:1' }))
  t.is((closed as UffdError).code, 'ECONNREFUSED')
  // The transport's own cause, without the client's layers above it.
  t.regex(
    closed?.message ?? '',
    /^HEAD failed with ECONNREFUSED: .*s3:\/\/[^ ]+\/ten\.bin: Connection refused \(os error 111\) \(reaching http:\/\/127\.0\.0\.1:1\)$/,
  )
  t.notRegex(closed?.message ?? '', /Generic S3 error|error sending request/)
  // https:// at a plain HTTP store: no TLS answer, said as such, and not retried.
  const started = Date.now()
  const tls = await t.throwsAsync(s3('ten.bin', { endpoint: store().s3.replace('http://', 'https://') }))
  t.is((tls as UffdError).code, 'EPROTONOSUPPORT')
  t.regex(tls?.message ?? '', /did not answer in TLS .*: if it serves plain HTTP, give the endpoint as http:\/\//)
  t.true(Date.now() - started < 5000, `${Date.now() - started} ms: not retried`)
  await t.throwsAsync(Source.objectStore('gs://bucket/key'), { code: 'EOPNOTSUPP' })
  await t.throwsAsync(Source.objectStore('s3://bucket-only'), { code: 'EINVAL' })
})

run('an object shorter than the region: zeros past its end, or with fallthrough the handler gets those pages', async (t) => {
  await store().put(BUCKET, 'short.bin', objectBytes(3 * PAGE + 100, 4))
  const zeros = serve(await s3('short.bin'), 8 * PAGE)
  const seen = census(zeros.region, 3 * PAGE + 100, [4])
  t.deepEqual([seen.bySeed[4], seen.zero, seen.wrong], [4, 4, 0])
  const through = serve(await s3('short.bin'), 8 * PAGE, { fallthrough: true })
  const handled: number[] = []
  through.uffd.handle((fault) => {
    handled.push(fault.offset / PAGE)
    fault.copy(new Uint8Array(PAGE).fill(0xab))
  })
  const toucher = new Toucher()
  closers.push(() => void toucher.terminate())
  const read = await within(toucher.read(through.region, { offsets: [0, 3 * PAGE, 4 * PAGE, 7 * PAGE] }), 'reads')
  const object = objectBytes(3 * PAGE + 100, 4)
  t.deepEqual(read.bytes, [object[0], object[3 * PAGE], 0xab, 0xab])
  t.deepEqual(handled.sort(), [4, 7])
})

const [hugeRun, hugeTitle] = withHugePages(
  8,
  test.serial,
  'hugetlb: 2 MiB pages from 4 MiB chunks, and 1 MiB chunks through the synchronous path',
)
const hugeDefine = run === test.serial ? hugeRun : run
hugeDefine(hugeTitle, async (t) => {
  for (const chunkSize of [4 * MiB, MiB]) {
    const source = await s3('ten.bin', { chunkSize })
    const uffd = new Userfaultfd()
    const region = Region.hugetlb(8 * MiB)
    closers.push(() => {
      uffd.close()
      region.close()
    })
    uffd.register(region, { source })
    const seen = census(region, SIZE, [1])
    t.deepEqual([seen.bySeed[1], seen.wrong], [(8 * MiB) / PAGE, 0], `chunks of ${chunkSize} bytes`)
  }
})

run('fault.fromSource(objectSource) in a handler, and prefetch() from the registered object source', async (t) => {
  const source = await s3('ten.bin')
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * CHUNK)
  closers.push(() => {
    uffd.close()
    region.close()
  })
  uffd.register(region)
  uffd.handle((fault) => {
    fault.fromSource(source)
  })
  const toucher = new Toucher()
  closers.push(() => void toucher.terminate())
  const expected = objectBytes(SIZE, 1)
  const read = await within(toucher.read(region, { offsets: [5 * PAGE + 9, CHUNK + 3] }), 'reads')
  t.deepEqual(read.bytes, [expected[5 * PAGE + 9], expected[CHUNK + 3]])

  const prefetched = serve(await s3('ten.bin'), SIZE)
  const report = await prefetched.uffd.prefetch(prefetched.region)
  t.is(report.mapped, pagesOf(SIZE) * PAGE)
  const seen = census(prefetched.region, SIZE, [1])
  t.is(seen.bySeed[1], pagesOf(SIZE))
  t.is(prefetched.uffd.stats.faults.missing, 0, 'prefetched: no fault')
})

run('a prefetch after a replay skips the pages mapped already, without fetching their chunks again', async (t) => {
  // One chunk kept in memory: a chunk read for a page mapped already would be fetched again.
  const source = await s3('ten.bin', { memoryCache: CHUNK, readaheadChunks: 0 })
  const { uffd, region } = serve(source, SIZE)
  // A replay: chunks 4 down to 0, as a trace would name them.
  const replayed = [4, 3, 2, 1, 0].map((chunk) => ({ offset: chunk * CHUNK, length: CHUNK }))
  const replay = await uffd.prefetch(region, replayed, { chunkPages: 64 })
  t.is(replay.mapped, 5 * CHUNK)
  const before = source.objectStats
  const rest = await uffd.prefetch(region)
  t.is(rest.present, 5 * CHUNK, 'the replayed pages, skipped')
  t.is(rest.mapped, pagesOf(SIZE) * PAGE - 5 * CHUNK)
  const after = source.objectStats
  t.is((after?.requests ?? 0) - (before?.requests ?? 0), 6, 'chunks 5 to 10 only')
  t.is(census(region, SIZE, [1]).bySeed[1], pagesOf(SIZE), 'every byte right')
  t.is(uffd.stats.faults.missing, 0)
})

// Chunks 9, 2, 7, 0, 5, 3 and 8, far apart, as a trace names them: a few pages of each, or every
// other page (128 ranges in a chunk, which once left a replay one request at a time).
const traces = {
  'a few pages of each chunk': [9, 2, 7, 0, 5, 3, 8].map((chunk) => ({ offset: chunk * CHUNK + 16 * PAGE, length: 32 * PAGE })),
  'a fragmented trace, 128 ranges in each chunk': [9, 2, 7, 0, 5, 3, 8].flatMap((chunk) =>
    Array.from({ length: 128 }, (_, i) => ({ offset: chunk * CHUNK + 2 * i * PAGE, length: PAGE })),
  ),
}
for (const [shape, trace] of Object.entries(traces)) {
  run(`a replay in a trace order keeps many requests in flight, and fetches only the chunks it names: ${shape}`, async (t) => {
    const proxy = await start('proxy', store().s3.slice('http://'.length))
    await proxy.send({ delay: 50 })
    const source = await s3('ten.bin', { endpoint: proxy.url, readaheadChunks: 8 })
    const { uffd, region } = serve(source, SIZE)
    const before = await proxy.send({})
    const replay = await uffd.prefetch(region, trace, { chunkPages: 64 })
    t.is(
      replay.mapped,
      trace.reduce((sum, range) => sum + range.length, 0),
    )
    const connections = (await proxy.send({})).connections - before.connections
    t.true(connections >= 4, `${connections} connections: requests in flight side by side, not one after another`)
    t.is(source.objectStats?.requests, 7, 'the chunks the trace names, no other')
    const last = trace.at(-1) ?? { offset: 0, length: PAGE }
    const pages = [trace[0]?.offset ?? 0, last.offset + last.length - PAGE].map((offset) => offset / PAGE)
    t.is(census(region, SIZE, [1], pages).bySeed[1], 2)
    await proxy.send({ delay: 0 })
  })
}

run('a replay that comes back to its chunks fetches each once, with a memory cache of two chunks', async (t) => {
  // readaheadChunks left at its default (16): no more is read ahead than the cache holds.
  const source = await s3('ten.bin', { memoryCache: 2 * CHUNK })
  const { uffd, region } = serve(source, SIZE)
  // First touches that come back to chunks 0 to 5 again and again, as a guest's do: in this order,
  // each chunk would be pushed out of memory before the trace needs it again.
  const trace = [0, 1, 2, 3].flatMap((round) =>
    [0, 5, 1, 4, 2, 3].map((chunk) => ({ offset: chunk * CHUNK + round * 16 * PAGE, length: 8 * PAGE })),
  )
  const replay = await uffd.prefetch(region, trace, { chunkPages: 64 })
  t.is(replay.mapped, trace.length * 8 * PAGE)
  t.is(source.objectStats?.requests, 6, 'each chunk once')
  const pages = trace.map(({ offset }) => offset / PAGE + 7)
  t.is(census(region, SIZE, [1], pages).bySeed[1], pages.length, 'every byte right')
  t.is(uffd.stats.faults.missing, 0)
})

run('random reads of 1% of the pages fetch little more than those pages (adaptive requests)', async (t) => {
  const size = 64 * MiB
  await store().put(BUCKET, 'sixty-four.bin', objectBytes(size, 5))
  const source = await s3('sixty-four.bin', { chunkSize: 256 * 1024 })
  const { region } = serve(source, size)
  const pages = size / PAGE
  let state = 12345
  const picks = Array.from({ length: pages / 100 }, () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0
    return state % pages
  })
  const seen = census(region, size, [5], picks)
  t.is(seen.wrong + seen.zero, 0)
  const fetched = source.objectStats?.bytesFetched ?? 0
  t.true(fetched <= 0.03 * size, `${(fetched / MiB).toFixed(2)} MiB fetched for ${picks.length} random pages`)
})

run('a scan backwards makes a request per chunk, not one per page', async (t) => {
  const source = await s3('ten.bin')
  const { region } = serve(source, SIZE)
  const pages = Array.from({ length: Math.floor(SIZE / PAGE) }, (_, i) => Math.floor(SIZE / PAGE) - 1 - i)
  t.is(census(region, SIZE, [1], pages).bySeed[1], pages.length, 'every byte right')
  const requests = source.objectStats?.requests ?? 0
  // 10 chunks; a few more for the first faults, which cannot know yet that the run goes backwards.
  t.true(requests <= 14, `${requests} requests for ${pages.length} pages read backwards`)
})

run('5xx answers are retried with backoff; past the bound the fault gets the fallback and an error with the status', async (t) => {
  const file = join(dir, 'http.bin')
  writeFileSync(file, objectBytes(4 * MiB, 6))
  const http = await start('http', file)
  const source = await Source.objectStore(`${http.url}/data.bin`, { chunkSize: CHUNK, retry: { retries: 3, delayMs: 10 } })
  await http.send({ fail: 2, status: 503 })
  const { region, errors } = serve(source, 4 * MiB)
  t.is(census(region, 4 * MiB, [6], [0]).bySeed[6], 1)
  t.is(source.objectStats?.retries, 2)
  await http.send({ fail: 1000, status: 503 })
  const failing = serve(source, 4 * MiB)
  const error = nextError(failing.uffd)
  const seen = census(failing.region, 4 * MiB, [6], [600])
  t.is(seen.zero, 1, 'the fallback: a zero page')
  const event = await error
  t.is(event.code, 'ERR_UFFD_SOURCE')
  const cause = event.cause as UffdError
  t.is(cause.status, 503)
  t.regex(event.message, new RegExp(`the object ${http.url}/data.bin could not serve`))
  t.regex(cause.message, /503.*after 3 retries/)
  t.deepEqual(errors.length, 0)
  await http.send({ fail: 0 })
})

/** Resolves when `done()` holds, polling; rejects after `ms`. */
async function until(done: () => boolean, what: string, ms = 10_000): Promise<void> {
  const limit = Date.now() + ms
  while (!done()) {
    if (Date.now() > limit) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

run('a dead store fails fast: the faults of its chunk share one failure, one error per outage, then it resumes by itself', async (t) => {
  const file = join(dir, 'outage.bin')
  writeFileSync(file, objectBytes(4 * MiB, 7))
  const http = await start('http', file)
  const retry = { retries: 3, delayMs: 10, maxDelayMs: 40 }
  const source = await Source.objectStore(`${http.url}/data.bin`, { chunkSize: CHUNK, retry, refetchAfterOutage: true })
  await http.send({ fail: 1e9, status: 503 })
  const { region, errors } = serve(source, 4 * MiB)
  // 64 pages of one chunk, one after another on this thread: each used to spend the whole retry
  // bound of its own (64 errors, 192 retries); now the first failure is every one's.
  const pages = Array.from({ length: 64 }, (_, i) => 128 + i)
  const started = performance.now()
  const down = census(region, 4 * MiB, [7], pages)
  const ms = performance.now() - started
  t.log(`64 faults on one chunk, the store down: ${ms.toFixed(0)} ms`)
  t.is(down.zero, 64, 'the fallback: zero pages')
  await until(() => errors.length > 0, 'the outage is said')
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.is(errors.length, 1, 'one error per outage, not one per page')
  const error = errors[0] as UffdError
  t.is(error.code, 'ERR_UFFD_SOURCE')
  t.is((error.cause as UffdError).status, 503)
  const stats = source.objectStats
  t.is(stats?.retries, 3, 'one request used the retry bound; the others failed at once')
  t.is(stats?.outages, 1)
  t.is(stats?.recoveries, 0)
  t.is(stats?.fallbackPages, 64)
  t.deepEqual(
    source.fallbackPages(),
    pages.map((page) => ({ region: region.id, offset: page * PAGE })),
    'the pages that got the fallback are listed',
  )
  // The store comes back: a probe finds it, service resumes, the pages that got zeros are
  // discarded and fault again, and read the object's bytes.
  await http.send({ fail: 0 })
  const back = performance.now()
  await until(() => source.objectStats?.recoveries === 1, 'service resumes')
  t.log(`resumed ${(performance.now() - back).toFixed(0)} ms after the store came back`)
  t.is(source.objectStats?.refetchedPages, 64)
  t.deepEqual(source.fallbackPages(), [], 'discarded: no longer listed')
  const again = census(region, 4 * MiB, [7], [...pages, 700])
  t.is(again.wrong + again.zero, 0, `first wrong page ${again.firstWrong}`)
  t.is(again.bySeed[7], 65)
  t.is(errors.length, 1)
})

run('faults of one chunk from four threads while the store fails share one request and its failure: one error for all', async (t) => {
  const file = join(dir, 'outage4.bin')
  writeFileSync(file, objectBytes(2 * MiB, 10))
  const http = await start('http', file)
  // A retry bound of 1 s + 2 s: the four faults arrive while the first request is still retried,
  // even on a loaded machine where a toucher's thread takes long to start (at 150 ms + 300 ms the
  // test once counted two failed requests under load).
  const source = await Source.objectStore(`${http.url}/data.bin`, {
    chunkSize: CHUNK,
    retry: { retries: 2, delayMs: 1000, maxDelayMs: 2000 },
  })
  await http.send({ fail: 1e9, status: 503 })
  const { region, errors } = serve(source, 2 * MiB)
  const touchers = [new Toucher(), new Toucher(), new Toucher(), new Toucher()]
  closers.push(() => {
    for (const toucher of touchers) void toucher.terminate()
  })
  const reads = await within(
    Promise.all(touchers.map((toucher, i) => toucher.read(region, { offsets: [(10 + 40 * i) * PAGE + 5] }))),
    'four readers',
  )
  t.deepEqual(
    reads.map((read) => read.bytes[0]),
    [0, 0, 0, 0],
    'the fallback for each',
  )
  await until(() => errors.length > 0, 'the failure is said')
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.is(errors.length, 1, 'one error for the four faults')
  const stats = source.objectStats
  t.is(stats?.failures, 1, 'one request failed, for all four')
  t.is(stats?.retries, 2)
  t.is(stats?.fallbackPages, 4)
  await http.send({ fail: 0 })
})

run('without refetchAfterOutage the pages that got the fallback keep it; a second outage is said again', async (t) => {
  const file = join(dir, 'outage2.bin')
  writeFileSync(file, objectBytes(2 * MiB, 8))
  const http = await start('http', file)
  const source = await Source.objectStore(`${http.url}/data.bin`, { chunkSize: CHUNK, retry: { retries: 1, delayMs: 10, maxDelayMs: 20 } })
  const { region, errors } = serve(source, 2 * MiB)
  for (const outage of [1, 2]) {
    await http.send({ fail: 1e9, status: 503 })
    t.is(census(region, 2 * MiB, [8], [outage * 8, outage * 8 + 1]).zero, 2)
    await until(() => errors.length === outage, `outage ${outage} is said`)
    await http.send({ fail: 0 })
    await until(() => source.objectStats?.recoveries === outage, `service resumes after outage ${outage}`)
  }
  t.is(source.objectStats?.outages, 2)
  t.is(source.objectStats?.refetchedPages, 0)
  const seen = census(region, 2 * MiB, [8], [8, 300])
  t.is(seen.zero, 1, 'the page that got the fallback keeps it')
  t.deepEqual(
    source.fallbackPages().map((page) => page.offset / PAGE),
    [8, 9, 16, 17],
  )
  t.is(seen.bySeed[8], 1, 'a page not touched in the outage is read from the store')
})

run("with fallback 'sigbus', a process whose store is down is stopped and stderr says why", async (t) => {
  const file = join(dir, 'sigbus.bin')
  writeFileSync(file, objectBytes(MiB, 9))
  const http = await start('http', file)
  const child = spawn(process.execPath, [join(__dirname, 'helpers', 'outage-child.js'), `${http.url}/data.bin`], {
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  closers.push(() => child.kill('SIGKILL'))
  let stderr = ''
  child.stderr.on('data', (data: Buffer) => {
    stderr += data.toString()
  })
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)))
  await within(new Promise((resolve) => child.stdout.once('data', resolve)), 'the child opens its source')
  await http.send({ fail: 1e9, status: 503 })
  child.stdin.write('go\n')
  t.is(await within(exited, 'the child ends'), 'SIGBUS')
  t.regex(stderr, new RegExp(`userfaultfd: the object ${http.url}/data.bin could not serve .*503`))
  await http.send({ fail: 0 })
})

run('plain HTTP Range requests from a node:http server: every byte, and a 404 when the source is made', async (t) => {
  const file = join(dir, 'plain.bin')
  const size = 5 * MiB + 77
  writeFileSync(file, objectBytes(size, 7))
  const http = await start('http', file)
  const source = await Source.objectStore(`${http.url}/data.bin`, { chunkSize: CHUNK })
  const { region } = serve(source, size)
  const seen = census(region, size, [7])
  t.deepEqual([seen.bySeed[7], seen.wrong], [pagesOf(size), 0])
  t.is((await http.send({})).ranges, 6)
  const missing = await t.throwsAsync(Source.objectStore(`${http.url}/other.bin`))
  t.is((missing as UffdError).status, 404)
})

for (const delay of [1, 10, 50]) {
  run(`${delay} ms added to every answer by a TCP proxy: every byte right`, async (t) => {
    const proxy = await start('proxy', store().s3.slice('http://'.length))
    await proxy.send({ delay })
    const source = await s3('ten.bin', { endpoint: proxy.url })
    const { region } = serve(source, SIZE)
    const seen = census(region, SIZE, [1])
    t.deepEqual([seen.bySeed[1], seen.wrong], [pagesOf(SIZE), 0])
    t.log(`${delay} ms: ${seen.ms.toFixed(0)} ms for ${(SIZE / MiB).toFixed(0)} MiB`)
  })
}

run('connections reset by a TCP proxy are retried: every byte right', async (t) => {
  const proxy = await start('proxy', store().s3.slice('http://'.length))
  const source = await s3('ten.bin', { endpoint: proxy.url, concurrency: 4, retry: { delayMs: 5 } })
  await proxy.send({ resetEvery: 3 })
  const { region, errors } = serve(source, SIZE)
  const seen = census(region, SIZE, [1])
  t.deepEqual([seen.bySeed[1], seen.wrong], [pagesOf(SIZE), 0])
  const counts = await proxy.send({ resetEvery: 0 })
  t.true(counts.resets > 0)
  t.true((source.objectStats?.retries ?? 0) > 0)
  t.is(errors.length, 0)
})

run('timeoutMs bounds a fault that waits for its chunk', async (t) => {
  const proxy = await start('proxy', store().s3.slice('http://'.length))
  const source = await s3('ten.bin', { endpoint: proxy.url })
  await proxy.send({ delay: 1500 })
  const { uffd, region } = serve(source, SIZE, { timeoutMs: 200 })
  const error = nextError(uffd)
  const started = performance.now()
  const seen = census(region, SIZE, [1], [9])
  t.true(performance.now() - started < 1400, 'woken before the chunk came')
  t.is(seen.zero, 1)
  const timedOut = await error
  t.is(timedOut.code, 'ERR_UFFD_TIMEOUT')
  t.regex(timedOut.message, /^the object s3:\/\/uffd-test\/ten.bin did not resolve a missing fault/)
  await proxy.send({ delay: 0 })
})

run('an object replaced under the source is an error (ESTALE), never mixed contents', async (t) => {
  await store().put(BUCKET, 'replaced.bin', objectBytes(4 * MiB, 8))
  const source = await s3('replaced.bin', { readaheadChunks: 0, adaptive: false })
  const { uffd, region } = serve(source, 4 * MiB)
  t.is(census(region, 4 * MiB, [8, 9], [0, 1, 2]).bySeed[8], 3)
  await store().put(BUCKET, 'replaced.bin', objectBytes(4 * MiB, 9))
  const error = nextError(uffd)
  const seen = census(region, 4 * MiB, [8, 9])
  t.is(seen.bySeed[9], 0, 'no page of the new object')
  t.is(seen.wrong, 0)
  t.true(seen.zero > 0)
  const event = await error
  t.is(event.code, 'ERR_UFFD_SOURCE')
  t.is((event.cause as UffdError).code, 'ESTALE')
  t.regex((event.cause as UffdError).message, /changed after the source was made/)
})

run('the store killed mid-scan and restarted: the source retries and recovers, every byte right', async (t) => {
  await store().put(BUCKET, 'restart.bin', objectBytes(16 * MiB, 10))
  const proxy = await start('proxy', store().s3.slice('http://'.length))
  await proxy.send({ delay: 40 })
  const source = await s3('restart.bin', {
    endpoint: proxy.url,
    readaheadChunks: 0,
    adaptive: false,
    retry: { retries: 1000, maxDelayMs: 500, timeoutMs: 90_000 },
  })
  const { region, errors } = serve(source, 16 * MiB)
  const scan = censusInWorker(region, 16 * MiB, [10])
  while ((source.objectStats?.requests ?? 0) < 2) await new Promise((resolve) => setTimeout(resolve, 5))
  await store().kill()
  t.log(`killed after ${source.objectStats?.requests} chunks`)
  await new Promise((resolve) => setTimeout(resolve, 500))
  await store().restart()
  const seen = await within(scan, 'the scan', 90_000)
  t.deepEqual([seen.bySeed[10], seen.wrong, seen.zero], [(16 * MiB) / PAGE, 0, 0])
  t.true((source.objectStats?.retries ?? 0) > 0)
  t.is(errors.length, 0)
  await proxy.send({ delay: 0 })
})

run('four processes with a shared cache directory fetch each chunk once per machine', async (t) => {
  const size = 32 * MiB
  await store().put(BUCKET, 'shared.bin', objectBytes(size, 11))
  const cacheDir = join(dir, 'cache')
  const child = join(__dirname, 'helpers', 'object-child.js')
  const runs = Array.from(
    { length: 4 },
    () =>
      new Promise<{ fetched: number; diskHits: number; wrong: number }>((resolve, reject) => {
        const proc = spawn(process.execPath, [child, `s3://${BUCKET}/shared.bin`, store().s3, cacheDir, String(size), '11'], {
          stdio: ['ignore', 'pipe', 'inherit'],
          env: { ...process.env, AWS_EC2_METADATA_DISABLED: 'true' },
        })
        let out = ''
        proc.stdout.on('data', (chunk) => {
          out += chunk
        })
        proc.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`child exited ${code}: ${out}`))))
      }),
  )
  const results = await within(Promise.all(runs), 'four processes', 60_000)
  const fetched = results.reduce((sum, r) => sum + r.fetched, 0)
  t.true(
    results.every((r) => r.wrong === 0),
    JSON.stringify(results),
  )
  t.true(fetched <= 1.1 * size, `${(fetched / MiB).toFixed(1)} MiB fetched by 4 processes for ${size / MiB} MiB`)
  t.true(
    results.some((r) => r.diskHits > 0),
    'chunks were read from the disk cache',
  )
})

run('a SeaweedFS cluster (a master, two volume servers, a filer with S3, separate processes)', async (t) => {
  const cluster = await Seaweed.cluster()
  try {
    t.is(cluster.processes, 4)
    await cluster.bucket(BUCKET)
    const size = 24 * MiB + 5
    await cluster.put(BUCKET, 'cluster.bin', objectBytes(size, 12))
    const source = await Source.objectStore(`s3://${BUCKET}/cluster.bin`, {
      endpoint: cluster.s3,
      anonymous: true,
      chunkSize: CHUNK,
      env: {},
    })
    const { region } = serve(source, size)
    const seen = census(region, size, [12])
    t.deepEqual([seen.bySeed[12], seen.wrong], [pagesOf(size), 0])
  } finally {
    await cluster.stop()
  }
})
