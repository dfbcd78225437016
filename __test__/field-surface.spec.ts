// What users of the package met first: regions larger than one ArrayBuffer, bytes() checking its
// arguments, region buffers posted to workers, views of a region in its own thread, tokens of closed
// regions, and error messages that must say what is actually wrong.

import { constants } from 'node:buffer'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MessageChannel } from 'node:worker_threads'
import test, { type ExecutionContext } from 'ava'
import { type Fault, Region, Source, UffdError, type UffdErrorCode, Userfaultfd } from 'userfaultfd'
import { freeHugePages, HUGE_PAGE, withReader } from './helpers/harness'

const PAGE = 4096
const GiB = 2 ** 30

function code(t: ExecutionContext, fn: () => unknown, expected: UffdErrorCode, syscall?: string): UffdError {
  const error = t.throws(fn) as UffdError
  t.true(error instanceof UffdError, `${String(error)} is a UffdError`)
  t.is(error.code, expected, error.message)
  if (syscall) t.is(error.syscall, syscall)
  return error
}

// The module object the package calls markAsUntransferable on, to watch the calls.
const workerThreads = require('node:worker_threads') as { markAsUntransferable: (object: object) => void }

function residentBytes(): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))
  return Number(match?.[1]) * 1024
}

test('a region larger than one ArrayBuffer is read and written through bytes() at any offset, unregistered', (t) => {
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
})

test('bytes() validates its arguments like every other call', (t) => {
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
})

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

test('transferring a region buffer throws where the runtime honours the mark, and never detaches the region', (t) => {
  const region = Region.anonymous(16 * PAGE)
  region.bytes(0, 1)[0] = 7
  const { port1, port2 } = new MessageChannel()
  const buffer = region.buffer
  const major = Number(process.versions.node.split('.')[0])
  if (major >= 21) {
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
})

test('attach in the owner thread gives a view whose close leaves the region open, and faults still name the owner', async (t) => {
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
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [PAGE + 3] })).bytes, [0x42])
    t.is(named[0], region, 'the fault names the object that owns the region, not the view')
    t.is(view.bytes(PAGE + 3, 1)[0], 0x42, 'the view reads the same memory')
    const viewBuffer = view.buffer
    view.close()
    t.true(view.closed)
    t.is(viewBuffer.byteLength, 0, 'the view let go of its buffer')
    t.false(region.closed, 'closing the view did not close the region')
    t.is(region.bytes(PAGE + 3, 1)[0], 0x42)
    t.deepEqual((await reader.read(region, { offsets: [2 * PAGE] })).bytes, [0x42], 'the region is still served')
  })
})

test('share on a closed region throws EBADF, as every call on a closed region does', (t) => {
  const region = Region.anonymous(PAGE)
  const view = Region.attach(region.share())
  view.close()
  code(t, () => view.share(), 'EBADF', 'share')
  t.is(region.share().id, region.id, 'the owner still shares')
  region.close()
  code(t, () => region.share(), 'EBADF', 'share')
})

test('a missing source file is said not to exist', (t) => {
  const error = code(t, () => Source.file('/nonexistent/userfaultfd-source'), 'ENOENT', 'open')
  t.regex(error.message, /does not exist/)
  t.notRegex(error.message, /registered|page cache/)
})

test('an anonymous mapping out of memory does not speak of huge pages', (t) => {
  // Within a process's address space (2^47 bytes on x64), but more than this one has free.
  const error = code(t, () => Region.anonymous(2 ** 47 - 2 ** 20), 'ENOMEM', 'mmap')
  t.notRegex(error.message, /huge/i)
  t.regex(error.message, /address space/)
})

test('a hugetlb region without enough huge pages says how many it needs, once', (t) => {
  const free = freeHugePages()
  let error: UffdError
  try {
    Region.hugetlb((free + 1) * HUGE_PAGE).close()
    t.pass('the huge pages were found (surplus pages): nothing to check')
    return
  } catch (thrown) {
    error = thrown as UffdError
  }
  if (error.code !== 'ENOMEM') {
    t.log(`no hugetlbfs here: ${error.message}`)
    t.pass()
    return
  }
  t.is(error.syscall, 'mmap')
  t.regex(error.message, new RegExp(`${free + 1} huge pages of 2048 KiB are needed and ${free} are free`))
  t.is(error.message.split('vm.nr_hugepages').length - 1, 1, error.message)
})

test('dirtyPages on a closed userfaultfd is EBADF whatever it negotiated', (t) => {
  const region = Region.anonymous(PAGE)
  for (const features of [[], ['WP_ASYNC']] as const) {
    const uffd = new Userfaultfd({ features: [...features] })
    uffd.register(region, { missing: false, wp: true })
    uffd.close()
    code(t, () => uffd.dirtyPages(region), 'EBADF', 'PAGEMAP_SCAN')
    code(t, () => uffd.dirtyPages(region, { method: 'pagemap' }), 'EBADF', '/proc/self/pagemap')
  }
  region.close()
})

test('dirtyPages by the pagemap file names the file, not PAGEMAP_SCAN', (t) => {
  const region = Region.anonymous(PAGE)
  const uffd = new Userfaultfd({ features: ['WP_ASYNC'] })
  const unregistered = code(t, () => uffd.dirtyPages(region, { method: 'pagemap' }), 'EINVAL', '/proc/self/pagemap')
  t.regex(unregistered.message, /^\/proc\/self\/pagemap: .*not registered/)
  t.notRegex(unregistered.message, /PAGEMAP_SCAN/)
  uffd.close()
  const plain = new Userfaultfd()
  plain.register(region, { missing: false, wp: true })
  const unsupported = code(t, () => plain.dirtyPages(region, { method: 'pagemap' }), 'EOPNOTSUPP', '/proc/self/pagemap')
  t.regex(unsupported.message, /WP_ASYNC/)
  plain.close()
  region.close()
})

test('adopting a file descriptor that is not a userfaultfd says so', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-adopt-'))
  const path = join(dir, 'plain')
  writeFileSync(path, 'not a userfaultfd')
  const fd = openSync(path, 'r')
  try {
    const error = t.throws(() => Userfaultfd.fromFd(fd, { ranges: [] })) as UffdError
    t.true(error instanceof UffdError)
    t.regex(error.message, /not a userfaultfd: it is .*plain/, 'it says what the fd is instead')
    t.notRegex(error.message, /: $/, 'the message does not end in an empty hint')
  } finally {
    closeSync(fd)
    rmSync(dir, { recursive: true })
  }
})

// The loader's message, in both situations a user meets it.
const loader = require(join(__dirname, '..', '..', '..', 'dist', 'lib', 'loader.js')) as typeof import('../lib/loader')
const tried = [new Error('userfaultfd-linux-x64-gnu: Cannot find module')]

test('installed from npm, a missing binding names the platform package to install, not npm run build:native', (t) => {
  const message = loader.loadFailureMessage({ platform: 'linux-x64-gnu', sourceCheckout: false, failures: tried })
  t.regex(message, /`npm install userfaultfd-linux-x64-gnu`/)
  t.regex(message, /--omit=optional/)
  t.notRegex(message, /build:native/)
  t.regex(message, /USERFAULTFD_NATIVE_PATH/)
  t.regex(message, /Tried:\n {2}userfaultfd-linux-x64-gnu: Cannot find module/)
  const unpublished = loader.loadFailureMessage({ platform: 'linux-riscv64-gnu', sourceCheckout: false, failures: tried })
  t.regex(unpublished, /No prebuilt binary is published for linux-riscv64-gnu \(only for linux-x64-gnu, /)
  t.notRegex(unpublished, /npm install userfaultfd-linux-riscv64-gnu|build:native/)
})

test('in a checkout of the repository, a missing binding says to run npm run build:native', (t) => {
  const message = loader.loadFailureMessage({ platform: 'linux-x64-gnu', sourceCheckout: true, failures: tried })
  t.regex(message, /`npm run build:native`/)
  t.regex(message, /libclang/)
  t.notRegex(message, /npm install userfaultfd-/)
  t.true(loader.isSourceCheckout(join(__dirname, '..', '..', '..')), 'this worktree is a checkout')
  const installed = mkdtempSync(join(tmpdir(), 'uffd-installed-'))
  t.false(loader.isSourceCheckout(installed), 'a package without crates/ is an install')
  rmSync(installed, { recursive: true })
})
