// Under Bun too, a residency limit keeps about its bytes resident while a region four times larger
// is read through, byte for byte, and a page the program wrote is kept.
import { afterAll, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Region, Source, Userfaultfd } from 'userfaultfd'

const MIB = 2 ** 20
const PAGE = 4096
const dir = mkdtempSync(join(tmpdir(), 'uffd-bun-residency-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

test('a 32 MiB region read through an 8 MiB limit', async () => {
  const size = 32 * MIB
  const bytes = Buffer.alloc(size)
  for (let i = 0; i < size; i += 4) bytes.writeUInt32LE((i * 2654435761) >>> 0, i)
  const file = join(dir, 'data.bin')
  writeFileSync(file, bytes)
  const uffd = new Userfaultfd()
  const region = Region.anonymous(size)
  uffd.register(region, { source: Source.file(file), maxResident: 8 * MIB })
  const memory = new Uint8Array(region.buffer)
  memory[5 * PAGE] = 0xcd
  let wrong = 0
  for (let round = 0; round < 2; round++) {
    for (let at = 0; at < size; at += PAGE) if (at !== 5 * PAGE && memory[at] !== bytes[at]) wrong++
  }
  expect(wrong).toBe(0)
  expect(memory[5 * PAGE]).toBe(0xcd)
  const deadline = Date.now() + 10_000
  while (uffd.stats.residency.residentBytes > 8 * MIB && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  expect(uffd.stats.residency.residentBytes).toBeLessThanOrEqual(8 * MIB)
  expect(uffd.stats.residency.evictions).toBeGreaterThan(0)
  expect(uffd.stats.residency.dirtyBytes).toBe(PAGE)
  uffd.close()
  region.close()
}, 60_000)

test('a writable file source: a write reaches the file on flush()', async () => {
  const file = join(dir, 'writable.bin')
  writeFileSync(file, Buffer.alloc(MIB, 7))
  const uffd = new Userfaultfd()
  const region = Region.anonymous(MIB)
  uffd.register(region, { source: Source.file(file, { writable: true }) })
  const memory = new Uint8Array(region.buffer)
  memory[3 * PAGE + 1] = 0x5a
  await uffd.flush()
  const bytes = readFileSync(file)
  expect(bytes[3 * PAGE + 1]).toBe(0x5a)
  expect(bytes[3 * PAGE + 2]).toBe(7)
  uffd.close()
  region.close()
}, 60_000)

test('a handler in a worker with a limit: each dropped page is asked of it again', async () => {
  const size = 8 * MIB
  const uffd = new Userfaultfd()
  const region = Region.anonymous(size)
  uffd.register(region, { maxResident: 2 * MIB })
  await uffd.handleInWorker(new URL('./pager.ts', import.meta.url))
  const view = new Uint8Array(region.buffer)
  let wrong = 0
  for (let round = 0; round < 2; round++) {
    for (let page = 0; page < size / PAGE; page++) if (view[page * PAGE + 9] !== ((page + 1) & 0xff)) wrong++
  }
  expect(wrong).toBe(0)
  const { evictions, refaults, residentBytes } = uffd.stats.residency
  expect(evictions).toBeGreaterThan(size / PAGE)
  expect(refaults).toBeGreaterThan(0)
  expect(residentBytes).toBeLessThanOrEqual(2 * MIB + 64 * PAGE)
  uffd.close()
  region.close()
}, 60_000)
