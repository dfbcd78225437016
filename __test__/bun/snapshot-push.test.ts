// Under Bun too: a memory file pushed as a snapshot to SeaweedFS (on loopback ports) and read back
// byte for byte through faults; a missing file is an error that names it.
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pushSnapshot, Region, Source, Userfaultfd } from 'userfaultfd'
// @ts-expect-error: a JavaScript module without types
import { startSeaweed } from '../../scripts/seaweed.mjs'

process.env.AWS_EC2_METADATA_DISABLED = 'true'
const weed = process.env.WEED ?? join(import.meta.dir, '..', '..', '.tools', 'venv', 'bin', 'weed')
const have = existsSync(weed)
if (!have && process.env.CI) throw new Error(`no SeaweedFS at ${weed}: the snapshot-push tests need it`)
const MiB = 1024 * 1024
const dir = mkdtempSync(join(tmpdir(), 'uffd-bun-push-'))
let store: { endpoint: string; stop(): void } | undefined

beforeAll(async () => {
  if (have) store = await startSeaweed(weed, 'bun-push')
}, 90_000)
afterAll(() => {
  store?.stop()
  rmSync(dir, { recursive: true, force: true })
})

test.skipIf(!have)(
  'a pushed snapshot reads back byte for byte',
  async () => {
    const file = join(dir, 'mem')
    const bytes = new Uint8Array(3 * MiB + 100)
    for (let i = 0; i < bytes.length; i += 7) bytes[i] = (i * 31) & 0xff
    bytes.fill(0, MiB, 2 * MiB)
    writeFileSync(file, bytes)
    const options = { endpoint: store?.endpoint ?? '', anonymous: true, env: {}, chunkSize: MiB }
    const report = await pushSnapshot(file, 's3://bun-push/mem', options)
    expect([report.chunks, report.uploaded, report.holes]).toEqual([4, 3, 1])
    const source = await Source.objectStore('s3://bun-push/mem', options)
    expect(source.size).toBe(bytes.length)
    const uffd = new Userfaultfd()
    const region = Region.anonymous(4 * MiB)
    uffd.register(region, { source })
    expect(Buffer.from(region.buffer, 0, bytes.length).equals(Buffer.from(bytes))).toBe(true)
    uffd.close()
    region.close()
    const missing = await pushSnapshot(join(dir, 'none'), 's3://bun-push/x', options).then(
      () => undefined,
      (e: { code?: string; message: string }) => e,
    )
    expect(missing?.code).toBe('ENOENT')
    expect(missing?.message).toContain(join(dir, 'none'))
    // A fresh SeaweedFS grows its first volumes on the first writes: seconds on a busy machine.
  },
  60_000,
)
