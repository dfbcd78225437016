// Under Bun too, the newer ways of reading a store (SeaweedFS on loopback ports): pages far apart
// read in frames, a sibling pushed on its base as deltas, and a local diff laid over an object.
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pushSnapshot, Region, Source, Userfaultfd } from 'userfaultfd'
// @ts-expect-error: a JavaScript module without types
import { startSeaweed } from '../../scripts/seaweed.mjs'

process.env.AWS_EC2_METADATA_DISABLED = 'true'
const weed = process.env.WEED ?? join(import.meta.dir, '..', '..', '.tools', 'venv', 'bin', 'weed')
const have = existsSync(weed)
if (!have && process.env.CI) throw new Error(`no SeaweedFS at ${weed}: the object-layer tests need it`)
const MiB = 1024 * 1024
const PAGE = 4096
const dir = mkdtempSync(join(tmpdir(), 'uffd-bun-layers-'))
let store: { endpoint: string; stop(): void } | undefined

beforeAll(async () => {
  if (have) store = await startSeaweed(weed, 'bun-layers')
}, 90_000)
afterAll(() => {
  store?.stop()
  rmSync(dir, { recursive: true, force: true })
})

function memory(seed: number): Uint8Array {
  const bytes = new Uint8Array(2 * MiB)
  for (let i = 0; i < bytes.length; i += 3) bytes[i] = (i * seed) & 0xff
  return bytes
}

/** Every page of `source` mapped at offsets far apart first, then in order: each one `bytes`'. */
function readsBack(source: Source, bytes: Uint8Array): boolean {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(bytes.length)
  uffd.register(region, { source })
  const view = new Uint8Array(region.buffer)
  const pages = bytes.length / PAGE
  let same = true
  for (let i = 0; i < 40; i++) {
    const at = ((i * 97) % pages) * PAGE + 11
    same &&= view[at] === bytes[at]
  }
  same &&= Buffer.from(region.buffer).equals(Buffer.from(bytes))
  uffd.close()
  region.close()
  return same
}

test.skipIf(!have)(
  'frames, deltas of a base, and a local diff over an object read back byte for byte',
  async () => {
    const options = { endpoint: store?.endpoint ?? '', anonymous: true, env: {}, chunkSize: MiB }
    const base = memory(7)
    writeFileSync(join(dir, 'base.mem'), base)
    await pushSnapshot(join(dir, 'base.mem'), 's3://bun-layers/base.mem', { ...options, frameSize: PAGE })
    expect(readsBack(await Source.objectStore('s3://bun-layers/base.mem', options), base)).toBe(true)

    // One byte in every 50th page changed: each chunk a delta of the base's.
    const sibling = base.slice()
    for (let at = 5; at < sibling.length; at += 50 * PAGE) sibling[at] ^= 0xff
    writeFileSync(join(dir, 'sibling.mem'), sibling)
    const report = await pushSnapshot(join(dir, 'sibling.mem'), 's3://bun-layers/sibling.mem', {
      ...options,
      frameSize: PAGE,
      base: 's3://bun-layers/base.mem',
    })
    expect([report.uploaded, report.deltas]).toEqual([2, 2])
    expect(readsBack(await Source.objectStore('s3://bun-layers/sibling.mem', options), sibling)).toBe(true)

    // A sparse local diff over the object: its pages where it has data, the object's elsewhere.
    const fd = openSync(join(dir, 'diff.mem'), 'w')
    ftruncateSync(fd, base.length)
    const layered = base.slice()
    for (const page of [3, 200, 401]) {
      writeSync(fd, new Uint8Array(PAGE).fill(page & 0xff), 0, PAGE, page * PAGE)
      layered.fill(page & 0xff, page * PAGE, (page + 1) * PAGE)
    }
    closeSync(fd)
    const object = await Source.objectStore('s3://bun-layers/base.mem', options)
    expect(readsBack(Source.layers([object, join(dir, 'diff.mem')]), layered)).toBe(true)
  },
  60_000,
)
