// Regions and their views across threads: the owner's close() never leaves a view in another
// thread reading zeros, closing detaches what it handed out, bytes() past one ArrayBuffer, views in
// the owner thread, sharing a closed region, a buffer a transfer never detaches. One case table, run
// by region-views.spec.ts under Node.js and by bun/region-views.test.ts under Bun.

import { constants } from 'node:buffer'
import { readFileSync } from 'node:fs'
import { MessageChannel } from 'node:worker_threads'
import { type Fault, Region, Source, UffdError, type UffdErrorCode, Userfaultfd } from 'userfaultfd'
import { anonymous, gate, patternByte, patternPage, within } from '../helpers/harness'
import type { Case, Check, Runtime } from './check'

const PAGE = 4096
const GiB = 2 ** 30

function residentBytes(): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))
  return Number(match?.[1]) * 1024
}

/** Asserts that `fn` throws a UffdError with the code `expected` (and the syscall, if given). */
function code(t: Check, fn: () => unknown, expected: UffdErrorCode, syscall?: string): UffdError {
  const error = t.throws(fn) as UffdError
  t.true(error instanceof UffdError, `${String(error)} is a UffdError`)
  t.is(error.code, expected, error.message)
  if (syscall) t.is(error.syscall, syscall)
  return error
}

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

/** A worker of the runtime reads half a served region through a view; the owner closes; the worker reads the rest. */
async function ownerClosesWhileAWorkerReads(runtime: Runtime, close: boolean) {
  const uffd = new Userfaultfd()
  const errors: UffdError[] = []
  uffd.on('error', (error) => errors.push(error))
  const region = Region.anonymous(PAGES * PAGE)
  const expected = pattern()
  uffd.register(region, { source: Source.bytes(expected) })
  const token = region.share()
  const worker = runtime.viewWorker(token, PAGES, close)
  const half = await worker.next()
  if (!half.half) throw new Error(`the view worker said ${JSON.stringify(half)}`)
  region.close()
  const afterOwnerClose = { closed: region.closed, registered: registered(region), attach: '' }
  try {
    Region.attach(token)
  } catch (error) {
    afterOwnerClose.attach = (error as UffdError).code
  }
  worker.go()
  const done = await worker.next()
  return { uffd, region, worker, errors, expected, afterOwnerClose, done }
}

export const regionCases: Case[] = [
  {
    name: 'the owner closes a region while a worker reads it through Region.attach: every page the worker reads is right',
    async run(t, runtime) {
      const { uffd, region, worker, errors, expected, afterOwnerClose, done } = await ownerClosesWhileAWorkerReads(runtime, true)
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
    },
  },
  {
    name: 'a view left open in a worker lets the region go when the worker ends',
    async run(t, runtime) {
      const { uffd, region, worker, expected, done } = await ownerClosesWhileAWorkerReads(runtime, false)
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
    },
  },
  {
    name: 'a view in the owner thread also keeps the region until it closes',
    run(t) {
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
    },
  },
  {
    name: 'close() detaches buffer and bytes() on this runtime, and bytes() on a closed region names bytes',
    run(t) {
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
    },
  },
  {
    name: "region.close() with a fault in flight in a worker's view: the owner's buffer is detached at once, the fault is still served, never zeros",
    async run(t, runtime) {
      const { uffd, region } = anonymous(4, { timeoutMs: 0 })
      const held = gate()
      uffd.handle(async (fault) => {
        await held.promise
        fault.copy(patternPage(fault.offset, PAGE))
      })
      const buffer = region.buffer
      try {
        const read = runtime.touch(region, [PAGE + 5])
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
        t.deepEqual(await read, [patternByte(PAGE, PAGE, 5)], "the reader's view still in use: its fault was served")
      } finally {
        held.open()
        uffd.close()
      }
    },
  },
  {
    name: 'a region larger than one ArrayBuffer is read and written through bytes() at any offset, unregistered',
    run(t) {
      const before = residentBytes()
      const region = Region.anonymous(8 * GiB)
      t.is(Region.maxBufferBytes, constants.MAX_LENGTH)
      // Node.js 20 and Bun hold 4 GiB in one ArrayBuffer; Node.js 22 and later 2^53 - 1 bytes, so there
      // an 8 GiB region has its buffer and no region is too large for one.
      const oneBufferHoldsIt = Region.maxBufferBytes >= region.size
      if (oneBufferHoldsIt) {
        t.log(`one ArrayBuffer holds ${Region.maxBufferBytes} bytes here: the 8 GiB region has a buffer`)
        t.is(region.buffer.byteLength, 8 * GiB)
      } else {
        const error = code(t, () => region.buffer, 'ERANGE', 'buffer')
        t.regex(error.message, /bytes\(offset, length\)/, 'the error says what to use instead')
      }

      const page = region.bytes(6 * GiB, PAGE)
      t.is(page.byteLength, PAGE)
      t.is(page[0], 0, 'a missing page of anonymous memory reads as zeros')
      page[0] = 0x5a
      page[PAGE - 1] = 0xa5
      // Another view of the same bytes, unaligned and from a separate buffer, sees the writes.
      const again = region.bytes(6 * GiB + PAGE - 1, 2)
      t.deepEqual([...again], [0xa5, 0])
      t.is(region.bytes(6 * GiB, 1)[0], 0x5a)
      t.is(region.bytes(8 * GiB - 1)[0], 0, 'the last byte of the region')

      t.is(region.bytes(6 * GiB).byteLength, 2 * GiB, 'by default the rest of the region')
      t.is(region.bytes().byteLength, Math.min(region.size, Region.maxBufferBytes), 'by default at most what one ArrayBuffer holds')
      t.is(region.bytes(8 * GiB).byteLength, 0, 'an empty view at the end')
      if (!oneBufferHoldsIt) code(t, () => region.bytes(0, Region.maxBufferBytes + 1), 'ERANGE', 'bytes')
      t.true(residentBytes() - before < 256 * 1024 * 1024, 'only the pages touched became resident')

      region.close()
      t.is(page.byteLength, 0, 'close() detached the view over the part at 6 GiB')
      t.is(again.byteLength, 0, 'and every other part')
      code(t, () => region.bytes(6 * GiB, PAGE), 'EBADF')
    },
  },
  {
    name: 'bytes() validates its arguments like every other call',
    run(t) {
      for (const region of [Region.anonymous(4 * PAGE), Region.anonymous(5 * GiB)]) {
        // As Node: a value of the wrong type is a TypeError, a number out of range a RangeError.
        t.throws(() => region.bytes('1' as unknown as number), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
        t.throws(() => region.bytes(0, '1' as unknown as number), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
        const outOfRange = { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' }
        for (const bad of [Number.NaN, -1, 0.5, Number.POSITIVE_INFINITY, 2 ** 53]) {
          t.throws(() => region.bytes(bad), outOfRange, `offset ${String(bad)}`)
          t.throws(() => region.bytes(0, bad), outOfRange, `length ${String(bad)}`)
        }
        t.throws(() => region.bytes(region.size + 1), { ...outOfRange, message: /bytes: offset \d+ is past the end/ })
        t.throws(() => region.bytes(region.size + 1, 0), outOfRange)
        t.throws(() => region.bytes(0, region.size + 1), outOfRange)
        t.throws(() => region.bytes(region.size - 1, 2), outOfRange)
        t.is(region.bytes(region.size - 1, 1).byteLength, 1)
        region.close()
        code(t, () => region.bytes(0, 1), 'EBADF')
      }
    },
  },
  {
    name: 'attach in the owner thread gives a view whose close leaves the region open, and faults still name the owner',
    async run(t, runtime) {
      const uffd = new Userfaultfd()
      const region = Region.anonymous(4 * PAGE)
      uffd.register(region)
      const view = Region.attach(region.share())
      t.not(view, region)
      t.false(view.owner)
      t.true(region.owner)
      t.is(view.id, region.id)
      const named: Region[] = []
      uffd.handle((fault: Fault) => {
        named.push(fault.region)
        fault.copy(new Uint8Array(PAGE).fill(0x42))
      })
      try {
        t.deepEqual(await runtime.touch(region, [PAGE + 3]), [0x42])
        t.is(named[0], region, 'the fault names the object that owns the region, not the view')
        t.is(view.bytes(PAGE + 3, 1)[0], 0x42, 'the view reads the same memory')
        const viewBuffer = view.buffer
        view.close()
        t.true(view.closed)
        t.is(viewBuffer.byteLength, 0, 'the view let go of its buffer')
        t.false(region.closed, 'closing the view did not close the region')
        t.is(region.bytes(PAGE + 3, 1)[0], 0x42)
        t.deepEqual(await runtime.touch(region, [2 * PAGE]), [0x42], 'the region is still served')
      } finally {
        uffd.close()
        region.close()
      }
    },
  },
  {
    name: 'share on a closed region throws EBADF, as every call on a closed region does',
    run(t) {
      const region = Region.anonymous(PAGE)
      const view = Region.attach(region.share())
      view.close()
      code(t, () => view.share(), 'EBADF', 'share')
      t.is(region.share().id, region.id, 'the owner still shares')
      region.close()
      code(t, () => region.share(), 'EBADF', 'share')
    },
  },
  {
    name: 'transferring a region buffer throws where the runtime honours the mark, and never detaches the region',
    run(t, runtime) {
      const region = Region.anonymous(16 * PAGE)
      region.bytes(0, 1)[0] = 7
      const { port1, port2 } = new MessageChannel()
      const buffer = region.buffer
      const major = Number(process.versions.node.split('.')[0])
      // Bun refuses (DataCloneError) as Node.js 21 and later do.
      if (runtime.name === 'bun' || major >= 21) {
        t.throws(() => port1.postMessage(buffer, [buffer]), { name: 'DataCloneError' })
      } else {
        // Node.js 20 ignores the mark in a transfer list and clones the buffer: nothing can refuse it.
        t.log(`Node.js ${process.versions.node} copies a marked ArrayBuffer rather than refusing to transfer it`)
        port1.postMessage(buffer, [buffer])
      }
      t.is(buffer.byteLength, 16 * PAGE, 'the region keeps its buffer')
      t.is(new Uint8Array(buffer)[0], 7)
      port1.close()
      port2.close()
      region.close()
    },
  },
]
