// Regions and their views across threads, and their buffers on every runtime: the owner's close()
// never leaves a view in another thread reading zeros, and closing detaches what it handed out
// (on Node.js 24 and later, where a marked buffer cannot be detached, too).

import { readFileSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import test from 'ava'
import { Region, Source, type UffdError, Userfaultfd } from 'userfaultfd'
import { avaCases } from './cases/ava'
import { regionCases } from './cases/regions'
import { anonymous, gate, patternByte, patternPage, within, withToucher } from './helpers/harness'

const PAGE = 4096
const PAGES = 40

/** The VmFlags of the mapping that holds `address` (`um`: registered for missing faults), or undefined. */
function vmFlags(address: bigint): string | undefined {
  let inside = false
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line)
    if (range) inside = BigInt(`0x${range[1]}`) <= address && address < BigInt(`0x${range[2]}`)
    else if (inside && line.startsWith('VmFlags:')) return line.slice('VmFlags:'.length).trim()
  }
  return undefined
}

const registered = (region: Region) => (vmFlags(region.address) ?? '').split(' ').includes('um')

function pattern(): Uint8Array {
  const bytes = new Uint8Array(PAGES * PAGE)
  for (let i = 0; i < bytes.length; i++) bytes[i] = ((i >> 12) * 13 + 1) & 0xff
  return bytes
}

// Reads the first byte of each page: half of them, then, told to, the rest; then closes its view,
// or leaves it open and stays alive until terminated.
const toucher = `
const { Region } = require('userfaultfd')
const { workerData, parentPort } = require('node:worker_threads')
const view = Region.attach(workerData.shared)
const bytes = new Uint8Array(view.buffer)
const seen = []
for (let page = 0; page < ${PAGES / 2}; page++) seen.push(bytes[page * ${PAGE}])
parentPort.postMessage({ half: true })
parentPort.once('message', () => {
  for (let page = ${PAGES / 2}; page < ${PAGES}; page++) seen.push(bytes[page * ${PAGE}])
  if (workerData.close) view.close()
  else setInterval(() => view, 1000) // stays alive, its view open, until terminated
  parentPort.postMessage({ seen, closed: view.closed })
})
`

async function ownerClosesWhileAWorkerReads(close: boolean) {
  const uffd = new Userfaultfd()
  const errors: UffdError[] = []
  uffd.on('error', (error) => errors.push(error))
  const region = Region.anonymous(PAGES * PAGE)
  const expected = pattern()
  uffd.register(region, { source: Source.bytes(expected) })
  const token = region.share()
  const worker = new Worker(toucher, { eval: true, workerData: { shared: token, close } })
  const messages: Array<{ half?: boolean; seen?: number[]; closed?: boolean }> = []
  const next = () =>
    within(new Promise<(typeof messages)[number]>((resolve) => worker.once('message', resolve)), 'the reading worker', 15_000)
  messages.push(await next())
  region.close()
  const afterOwnerClose = { closed: region.closed, registered: registered(region), attach: '' }
  try {
    Region.attach(token)
  } catch (error) {
    afterOwnerClose.attach = (error as UffdError).code
  }
  worker.postMessage('go')
  const done = await next()
  return { uffd, region, worker, errors, expected, afterOwnerClose, done }
}

test('the owner closes a region while a worker reads it through Region.attach: every page the worker reads is right', async (t) => {
  const { uffd, region, worker, errors, expected, afterOwnerClose, done } = await ownerClosesWhileAWorkerReads(true)
  try {
    t.deepEqual(afterOwnerClose, { closed: true, registered: true, attach: 'EINVAL' }, 'the owner is closed, the region still in use')
    t.deepEqual(
      done.seen,
      Array.from({ length: PAGES }, (_, page) => expected[page * PAGE]),
      'no page of the view read zeros',
    )
    t.true(done.closed)
    t.false(registered(region), 'the last view closed: the region is unregistered')
    t.deepEqual(errors, [])
  } finally {
    uffd.close()
    await worker.terminate()
  }
})

test('a view left open in a worker lets the region go when the worker ends', async (t) => {
  const { uffd, region, worker, expected, done } = await ownerClosesWhileAWorkerReads(false)
  try {
    t.is(done.seen?.[PAGES - 1], expected[(PAGES - 1) * PAGE])
    t.true(registered(region), 'the open view keeps the region registered')
    await worker.terminate()
    await within(
      (async () => {
        while (registered(region)) await new Promise((resolve) => setTimeout(resolve, 10))
      })(),
      'the region to be unregistered after the worker ended',
      10_000,
    )
    t.false(registered(region))
  } finally {
    uffd.close()
    await worker.terminate()
  }
})

test('a view in the owner thread also keeps the region until it closes', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(PAGE)
  uffd.register(region)
  const view = Region.attach(region.share())
  region.close()
  t.true(region.closed)
  t.false(view.closed, 'the view is open until it closes')
  t.true(registered(region))
  view.close()
  t.true(view.closed)
  t.false(registered(region))
  uffd.close()
})

test('close() detaches buffer and bytes() on this runtime, and bytes() on a closed region names bytes', (t) => {
  // On Node.js 24 and later, detaching a buffer marked untransferable aborted the process here.
  const region = Region.anonymous(4 * PAGE)
  const whole = region.buffer
  const part = region.bytes(PAGE, 10)
  new Uint8Array(whole)[0] = 1
  region.close()
  t.is(whole.byteLength, 0)
  t.is(part.byteLength, 0)
  const error = t.throws(() => region.bytes(0, 1)) as UffdError
  t.is(error.code, 'EBADF')
  t.is(error.syscall, 'bytes')
  t.regex(error.message, /^bytes: /)
})

// A region's bytes() and buffers: past one ArrayBuffer, untransferable, views in the owner thread.

const GiB = 2 ** 30

// The module object the package calls markAsUntransferable on, to watch the calls.
const workerThreads = require('node:worker_threads') as { markAsUntransferable: (object: object) => void }

// Node.js 24 and later keep the mark as a detach key that napi cannot pass: there a marked buffer
// could not be detached by close(), so the package marks none (and the runtime refuses to transfer
// an external buffer all the same).
function markKeepsDetach(): boolean {
  const probe = new ArrayBuffer(1) as ArrayBuffer & { transfer?: () => ArrayBuffer }
  workerThreads.markAsUntransferable(probe)
  try {
    probe.transfer?.()
    return true
  } catch {
    return false
  }
}

test('every ArrayBuffer a region hands out is marked untransferable where the runtime can still detach it', (t) => {
  const expectMark = markKeepsDetach()
  if (!expectMark) t.log(`Node.js ${process.versions.node} cannot detach a marked buffer: none is marked`)
  const marked = new Set<unknown>()
  const original = workerThreads.markAsUntransferable
  workerThreads.markAsUntransferable = (object: object) => {
    marked.add(object)
    original(object)
  }
  try {
    const small = Region.anonymous(PAGE)
    t.is(marked.has(small.buffer), expectMark, 'region.buffer')
    t.is(marked.has(small.bytes(1, 2).buffer), expectMark, 'bytes() of a region that fits one ArrayBuffer')
    const large = Region.anonymous(5 * GiB)
    t.is(marked.has(large.bytes(4 * GiB, PAGE).buffer), expectMark, 'bytes() of a region larger than one ArrayBuffer')
    const view = Region.attach(small.share())
    t.is(marked.has(view.buffer), expectMark, 'the buffer of a view')
    view.close()
    small.close()
    large.close()
  } finally {
    workerThreads.markAsUntransferable = original
  }
})

test("region.close() with a fault in flight in a worker's view: the owner's buffer is detached at once, the fault is still served, never zeros", async (t) => {
  const { uffd, region } = anonymous(4, { timeoutMs: 0 })
  const held = gate()
  uffd.handle(async (fault) => {
    await held.promise
    fault.copy(patternPage(fault.offset, PAGE))
  })
  const buffer = region.buffer
  await withToucher([uffd], async (toucher) => {
    const read = toucher.read(region, { offsets: [PAGE + 5] })
    await within(
      (async () => {
        while (uffd.stats.inFlight < 1) await new Promise((resolve) => setTimeout(resolve, 10))
      })(),
      'a fault in flight',
    )
    region.close()
    t.is(buffer.byteLength, 0, "the owner's buffer is detached")
    t.throws(() => region.buffer, { code: 'EBADF' })
    held.open()
    t.deepEqual((await read).bytes, [patternByte(PAGE, PAGE, 5)], "the reader's view still in use: its fault was served")
  })
})

// A region's bytes(), a view in the owner thread, a closed region's share(): the case table both
// runtimes run (cases/regions.ts; Bun runs it in bun/region-views.test.ts).
avaCases(regionCases)
