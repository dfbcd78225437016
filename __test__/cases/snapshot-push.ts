// pushSnapshot against a real SeaweedFS (started on loopback ports, killed by pid at the end), read
// back through Source.objectStore by real faults, every byte compared with the file pushed: a
// snapshot with holes, frames, deltas of a base, a local diff over an object, and the arguments
// checked. Run under Node.js by ava's object-store phase (snapshot-push.spec.ts, which adds the
// push's other tests and shares this store) and by Bun (bun/snapshot-push.test.ts). Every client is
// given its endpoint explicitly and is anonymous; no request leaves the loopback address.
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type PushSnapshotOptions, pushSnapshot, type Region, Source } from 'userfaultfd'
import { objectBytes, PAGE, serveSource } from '../helpers/object-data'
import { Seaweed, weedBinary } from '../helpers/seaweed'
import { type Case, table } from './check'

const { table: pushTable, define } = table()

export { pushTable }

// Nothing here may look for credentials or ask an instance-metadata service.
process.env.AWS_EC2_METADATA_DISABLED = 'true'
for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_ENDPOINT_URL', 'AWS_PROFILE'])
  delete process.env[name]

export const MiB = 1024 * 1024
export const CHUNK = MiB
export const BUCKET = 'uffd-push'
export const dir = mkdtempSync(join(tmpdir(), 'uffd-push-'))
const { path: weedPath, why: noWeed } = weedBinary()

export { weedPath }

if (!weedPath) {
  if (process.env.CI) define('SeaweedFS is installed for the snapshot-push tests', (t) => t.true(false, noWeed))
  else console.warn(`snapshot-push tests skipped: ${noWeed}`)
}

/** A case that needs the store: run one at a time (they share it); without weed, skipped, saying why. */
function run(name: string, body: Case['run']): void {
  if (weedPath) define.serial(name, body)
  else define.skip(`${name} (skipped: ${noWeed})`, body)
}

let weed: Seaweed | undefined
export const closers: (() => void)[] = []

define.before(async () => {
  if (!weedPath) return
  weed = await Seaweed.server()
  await weed.bucket(BUCKET)
  await weed.bucket(`${BUCKET}-other`)
})

define.after(async () => {
  for (const close of closers) close()
  await weed?.stop()
  rmSync(dir, { recursive: true, force: true })
})

export function store(): Seaweed {
  if (!weed) throw new Error('SeaweedFS is not running')
  return weed
}

export const url = (key: string) => `s3://${BUCKET}/${key}`
export const push = (file: string, key: string, options: PushSnapshotOptions = {}) =>
  pushSnapshot(file, url(key), { endpoint: store().s3, anonymous: true, chunkSize: CHUNK, env: {}, ...options })

/**
 * A memory file of `chunks` chunks of 1 MiB and 1234 bytes more: data from `seed` except chunk 2
 * written as zeros and chunks 5 and 6 left as a hole of the sparse file; `changed` chunks hold data
 * of another seed.
 */
export function memoryFile(name: string, chunks: number, seed: number, changed: number[] = []): string {
  const path = join(dir, name)
  const size = chunks * CHUNK + 1234
  const fd = openSync(path, 'w')
  ftruncateSync(fd, size)
  const data = objectBytes(size, seed)
  const other = objectBytes(size, seed + 100)
  for (let chunk = 0; chunk <= chunks; chunk++) {
    if (chunk === 5 || chunk === 6) continue
    const start = chunk * CHUNK
    const end = Math.min(size, start + CHUNK)
    const bytes = chunk === 2 ? new Uint8Array(end - start) : (changed.includes(chunk) ? other : data).subarray(start, end)
    writeSync(fd, bytes, 0, bytes.length, start)
  }
  closeSync(fd)
  return path
}

export const serve = (source: Source, size: number, options: { timeoutMs?: number; fallthrough?: boolean } = {}) =>
  serveSource(source, size, closers, options)

/** The first offset where the region differs from the file, or -1. */
export function firstDifference(region: Region, file: string): number {
  const expected = readFileSync(file)
  const got = Buffer.from(region.buffer, 0, expected.length)
  if (got.equals(expected)) return -1
  for (let i = 0; i < expected.length; i++) if (got[i] !== expected[i]) return i
  return -1
}

run('a pushed snapshot is read back byte for byte through faults; holes are neither uploaded nor fetched', async (t) => {
  const file = memoryFile('one.mem', 10, 1)
  const report = await push(file, 'snaps/one.mem')
  // 11 chunks: 0-10 (10 holds the 1234 bytes over); 2 is zeros, 5 and 6 a hole of the file.
  t.like(report, { url: url('snaps/one.mem'), chunkPrefix: 'snaps/chunks/', chunks: 11, uploaded: 8, deduped: 0, holes: 3 })
  t.is(report.bytesIn, 10 * CHUNK + 1234)
  t.is(report.bytesData, 7 * CHUNK + 1234)
  t.is(report.bytesOut, report.bytesStored)
  t.true(report.bytesOut > 0)

  const source = await Source.objectStore(url('snaps/one.mem'), { endpoint: store().s3, anonymous: true, env: {} })
  t.is(source.size, 10 * CHUNK + 1234, "the memory's size, not the manifest's")
  t.true(source.objectStats.snapshot)
  const { uffd, region, errors } = serve(source, source.size + 3 * PAGE)
  t.is(firstDifference(region, file), -1)
  t.true(
    new Uint8Array(region.buffer, source.size).every((b) => b === 0),
    'zeros past the end',
  )
  const stats = source.objectStats
  t.is(stats.requests, 1 + 8, 'the manifest and each chunk with data once; no request for a hole')
  const manifest = await (await fetch(`${store().s3}/${BUCKET}/snaps/one.mem`)).arrayBuffer()
  t.is(stats.bytesFetched, report.bytesStored + manifest.byteLength, 'the compressed chunks and the manifest')
  t.true(uffd.stats.faults.missing > 0)
  t.true(uffd.stats.holes >= 3, `the zero chunk and the hole's two mapped with zero pages, counted: ${uffd.stats.holes}`)
  // Faults that waited for the store count in the latency, as the ones served in the turn do.
  const latency = uffd.latency()
  t.true(latency.count >= 8 && latency.p50Micros > 0 && latency.p99Micros >= latency.p50Micros, JSON.stringify(latency))
  t.deepEqual(errors, [])
})

run('a fault far from the others fetches only the frames around its page, checked, with one range request', async (t) => {
  const file = memoryFile('frames.mem', 10, 9)
  const report = await push(file, 'frames/frames.mem', { frameSize: PAGE })
  const manifest = (await (await fetch(`${store().s3}/${BUCKET}/frames/frames.mem`)).json()) as { version: number; frameSize: number }
  t.like(manifest, { version: 3, frameSize: PAGE })
  const source = await Source.objectStore(url('frames/frames.mem'), { endpoint: store().s3, anonymous: true, env: {} })
  const { region, errors } = serve(source, source.size)
  const bytes = new Uint8Array(region.buffer)
  const expected = readFileSync(file)
  // Jumps between chunks 0, 1, 3 and 4 shrink the request from a chunk down to a frame.
  let sum = 0
  for (let i = 0; i < 30; i++) sum += bytes[[0, 1, 3, 4][i % 4] * CHUNK + ((i * 37) % 256) * PAGE]
  const before = source.objectStats
  // Then pages of chunks 7 to 9, none read yet, far apart: one frame each.
  const pages = Array.from({ length: 12 }, (_, i) => (7 + (i % 3)) * CHUNK + (20 * i + 3) * PAGE)
  for (const at of pages) t.is(bytes[at + 100], expected[at + 100])
  const after = source.objectStats
  t.is(after.requests - before.requests, pages.length, 'one range request a fault')
  // A frame of random data is about a page and its frame header: nothing of the rest of the chunk.
  const fetched = after.bytesFetched - before.bytesFetched
  t.true(fetched <= pages.length * PAGE * 1.05, `${fetched} bytes fetched for ${pages.length} pages`)
  for (const at of pages) t.true(Buffer.from(region.buffer, at, PAGE).equals(expected.subarray(at, at + PAGE)), `page at ${at}`)
  t.true(report.bytesStored > 0 && sum >= 0)
  t.deepEqual(errors, [])
})

run(
  'a sibling with 1% of its pages changed, scattered, pushed on its base uploads less than 1%, and reads back byte for byte',
  async (t) => {
    const file = memoryFile('delta-base.mem', 10, 11)
    const base = await push(file, 'delta/base.mem')
    /** `from` with one byte changed in every 100th page (from `first` on), written as `name`. */
    const changed = (from: string, name: string, first: number) => {
      const bytes = readFileSync(from)
      const path = join(dir, name)
      for (let page = first; page < bytes.length / PAGE; page += 100) {
        // Not in the zero chunk or the hole: those stay zeros.
        if ([2, 5, 6].includes(Math.floor((page * PAGE) / CHUNK))) continue
        bytes[page * PAGE + 7] ^= 0x5a
      }
      writeFileSync(path, bytes)
      return path
    }
    const sibling = changed(file, 'delta-sibling.mem', 13)
    const next = await push(sibling, 'delta/sibling.mem', { base: url('delta/base.mem') })
    // Chunk 10 (1234 bytes) has no changed page: the base's. Each changed 16 KiB frame is a patch
    // made against the base's frame: a few bytes, not the frame.
    t.like(next, { chunks: 11, uploaded: 7, deltas: 7, fromBase: 1, holes: 3 })
    t.true(next.bytesOut < base.bytesOut * 0.01, `the sibling uploads ${next.bytesOut} bytes, the base ${base.bytesOut}`)
    // A sibling of the sibling (other pages changed): its deltas name the base's objects and the sibling's.
    const third = changed(sibling, 'delta-third.mem', 61)
    const last = await push(third, 'delta/third.mem', { base: url('delta/sibling.mem') })
    t.like(last, { uploaded: 7, deltas: 7, fromBase: 1 })
    t.true(last.bytesOut < base.bytesOut * 0.01, `the third uploads ${last.bytesOut} bytes`)
    // 4 KiB frames too.
    const small = await push(file, 'delta/small-base.mem', { frameSize: PAGE })
    const smallSibling = await push(sibling, 'delta/small-sibling.mem', { frameSize: PAGE, base: url('delta/small-base.mem') })
    t.true(smallSibling.bytesOut < small.bytesOut * 0.01, `${smallSibling.bytesOut} of ${small.bytesOut}`)
    for (const [key, path] of [
      ['delta/sibling.mem', sibling],
      ['delta/third.mem', third],
      ['delta/small-sibling.mem', sibling],
    ] as const) {
      // Whole chunks (a scan) and frames (pages far apart, on a fresh source): every byte the file's.
      const scanned = await Source.objectStore(url(key), { endpoint: store().s3, anonymous: true, env: {} })
      t.is(firstDifference(serve(scanned, scanned.size).region, path), -1, `${key} scanned`)
      const picked = await Source.objectStore(url(key), { endpoint: store().s3, anonymous: true, env: {} })
      const { region, errors } = serve(picked, picked.size)
      const expected = readFileSync(path)
      for (let i = 0; i < 60; i++) {
        const at = (((i * 7919) % Math.floor(expected.length / PAGE)) * PAGE) % expected.length
        t.true(Buffer.from(region.buffer, at, PAGE).equals(expected.subarray(at, at + PAGE)), `${key}: page at ${at}`)
      }
      t.deepEqual(errors, [])
    }
  },
)

run('bad arguments are refused with what is wrong, before any request', async (t) => {
  const file = memoryFile('args.mem', 1, 5)
  const e = { endpoint: store().s3, anonymous: true, env: {} }
  await t.throwsAsync(pushSnapshot(file, url('x'), { ...e, chunkSize: 1000 }), {
    code: 'ERR_OUT_OF_RANGE',
    message: /options.chunkSize/,
  })
  await t.throwsAsync(pushSnapshot(file, url('x'), { ...e, level: 99 }), { code: 'ERR_OUT_OF_RANGE', message: /zstd level/ })
  await t.throwsAsync(pushSnapshot(file, url('x'), { ...e, frameSize: 1000 }), { code: 'ERR_OUT_OF_RANGE', message: /options.frameSize/ })
  // 12 KiB frames do not cut a 1 MiB chunk evenly.
  await t.throwsAsync(pushSnapshot(file, url('x'), { ...e, chunkSize: CHUNK, frameSize: 3 * PAGE }), {
    message: /the frame size 12288 does not cut the chunk size 1048576 into frames of whole pages/,
  })
  await t.throwsAsync(pushSnapshot(join(dir, 'missing.mem'), url('x'), e), { code: 'ENOENT', message: /missing\.mem/ })
  await t.throwsAsync(pushSnapshot(dir, url('x'), e), { code: 'EINVAL', message: /not a regular file/ })
  await t.throwsAsync(pushSnapshot(file, 'gs://b/k', e), { code: 'EOPNOTSUPP' })
  await t.throwsAsync(pushSnapshot(file, 's3://bucket-only', e), { code: 'EINVAL' })
  await t.throwsAsync(pushSnapshot(file, url('x'), { env: {} }), { code: 'EINVAL', message: /no credentials/ })
  await t.throwsAsync(pushSnapshot(file, url('x'), { ...e, endpoint: '127.0.0.1:8333' }), {
    code: 'EINVAL',
    message: /endpoint "127.0.0.1:8333"/,
  })
  await t.throwsAsync(pushSnapshot(file, url('x'), { ...e, base: `s3://${BUCKET}-other/y` }), {
    code: 'EINVAL',
    message: /not in the bucket/,
  })
  await push(file, 'args/base.mem')
  await t.throwsAsync(pushSnapshot(file, url('x'), { ...e, base: url('args/base.mem'), chunkSize: 2 * CHUNK }), {
    code: 'EINVAL',
    message: /chunks of 1048576 bytes, this push 2097152/,
  })
  await t.throwsAsync(pushSnapshot(file, url('x'), { ...e, base: url('args/base.mem'), frameSize: 8 * PAGE }), {
    code: 'EINVAL',
    message: /has frames of 16384 bytes, this push 32768: no chunk could be shared \(pass --frame-size 16384, or leave it out/,
  })
  // Left out, the sizes are the base's (its 1 MiB chunks, not the default 4 MiB): its chunks are shared.
  const sibling = await pushSnapshot(file, url('args/sibling.mem'), { ...e, base: url('args/base.mem') })
  t.like(sibling, { uploaded: 0, fromBase: sibling.chunks - sibling.holes })
  // A base of 8 KiB chunks in 4 KiB frames: its chunk size given, its frame size (not the default
  // 16 KiB, which would not cut 8 KiB) taken from it.
  await push(file, 'args/small.mem', { chunkSize: 2 * PAGE, frameSize: PAGE })
  const small = await pushSnapshot(file, url('args/small-sibling.mem'), { ...e, base: url('args/small.mem'), chunkSize: 2 * PAGE })
  t.like(small, { uploaded: 0, fromBase: small.chunks - small.holes })
  await store().put(BUCKET, 'args/plain.mem', readFileSync(file))
  await t.throwsAsync(pushSnapshot(file, url('x'), { ...e, base: url('args/plain.mem') }), {
    code: 'EINVAL',
    message: /the base s3:\/\/.*args\/plain\.mem is not a pushed snapshot .*give the URL of a snapshot pushed before/,
  })
  await t.throwsAsync(pushSnapshot(file, url('x'), { ...e, base: url('args/no-such.mem') }), { code: 'ENOENT' })
  // SeaweedFS answers a write to a bucket that does not exist with 403: the message says to look.
  await t.throwsAsync(pushSnapshot(file, 's3://no-such-bucket/x', e), {
    code: 'EACCES',
    message: /refused \(check the credentials, that they may write there, and that the bucket exists\)/,
  })
  await t.throwsAsync(pushSnapshot(file, url('x'), { ...e, chunkPrefix: '../up/' }), { code: 'EINVAL', message: /plain key prefix/ })
})

run(
  'an object in the store with a local diff above it: each page from the diff where it has data, else the object; both a pushed snapshot and a plain object, faults and a prefetch',
  async (t) => {
    const base = memoryFile('under.mem', 10, 3)
    const size = 10 * CHUNK + 1234
    // Pages here and there, a run, a page in the base's hole (chunks 5 and 6), the last page.
    const diff = diffFile(
      'above.mem',
      size,
      (p) => p % 97 === 5 || (p >= 300 && p < 303) || p === 5 * 256 + 1 || p === Math.floor(size / PAGE),
    )
    const expected = merged('merged.mem', base, diff)
    await push(base, 'layers/pushed.mem')
    await store().put(BUCKET, 'layers/plain.mem', readFileSync(base))
    for (const key of ['layers/pushed.mem', 'layers/plain.mem']) {
      const object = await Source.objectStore(url(key), { endpoint: store().s3, anonymous: true, env: {} })
      const layered = Source.layers([object, diff.path])
      t.is(layered.size, size)
      // Faults first from the end backwards (so chunks are read around pages the diff has), then the rest.
      const { region, errors } = serve(layered, size)
      const view = new Uint8Array(region.buffer)
      let sum = 0
      for (let p = Math.floor(size / PAGE); p >= 0; p -= 13) sum += view[p * PAGE] ?? 0
      t.true(sum >= 0)
      t.is(firstDifference(region, expected), -1, key)
      t.deepEqual(errors, [], key)

      // The prefetch maps the same from both, with no fault.
      const again = Source.layers([await Source.objectStore(url(key), { endpoint: store().s3, anonymous: true, env: {} }), diff.path])
      const prefetched = serve(again, size)
      await prefetched.uffd.prefetch(prefetched.region)
      t.is(prefetched.uffd.stats.faults.missing, 0)
      t.is(firstDifference(prefetched.region, expected), -1, `${key}, prefetched`)
    }
    const object = await Source.objectStore(url('layers/plain.mem'), { endpoint: store().s3, anonymous: true, env: {} })
    t.throws(() => Source.layers([object, diff.path], { writable: true }), {
      code: 'ERR_INVALID_ARG_TYPE',
      message: /nothing is written back to a store/,
    })
    t.throws(() => Source.layers([diff.path, object] as string[]), { code: 'ERR_INVALID_ARG_TYPE' })
    t.throws(() => Source.layers([Source.zero(), diff.path]), { message: /an object-store source/ })
  },
)

/** A sparse diff of `chunks` 1 MiB chunks: pages of another seed where `has` says, holes elsewhere. */
export function diffFile(name: string, size: number, has: (page: number) => boolean): { path: string; pages: number[] } {
  const path = join(dir, name)
  const fd = openSync(path, 'w')
  ftruncateSync(fd, size)
  const other = objectBytes(size, 77)
  const pages: number[] = []
  for (let p = 0; p * PAGE < size; p++) {
    if (!has(p)) continue
    writeSync(fd, other, p * PAGE, Math.min(PAGE, size - p * PAGE), p * PAGE)
    pages.push(p)
  }
  closeSync(fd)
  return { path, pages }
}

/** The memory `base` with `diff` above it: what a VM restored from both sees. */
export function merged(name: string, base: string, diff: { path: string; pages: number[] }): string {
  const bytes = readFileSync(base)
  const above = readFileSync(diff.path)
  for (const p of diff.pages) above.copy(bytes, p * PAGE, p * PAGE, Math.min((p + 1) * PAGE, bytes.length))
  const path = join(dir, name)
  writeFileSync(path, bytes)
  return path
}
