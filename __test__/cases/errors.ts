// What errors and warnings say: the code, the syscall, the numbers and their bounds, the file, and
// nothing misleading (no huge pages for an anonymous mapping, no PAGEMAP_SCAN for the pagemap file).
// Run under Node.js (errors.spec.ts) and Bun (bun/errors.test.ts).

import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Region, UffdError, type UffdErrorCode, Userfaultfd } from 'userfaultfd'
import { freeHugePages, HUGE_PAGE } from '../helpers/harness'
import { type Check, table } from './check'

const { table: errorCases, define } = table()

export { errorCases }

const PAGE = 4096

/** Asserts that `fn` throws a UffdError with the code `expected` (and the syscall, if given). */
export function code(t: Check, fn: () => unknown, expected: UffdErrorCode, syscall?: string): UffdError {
  const error = t.throws(fn) as UffdError
  t.true(error instanceof UffdError, `${String(error)} is a UffdError`)
  t.is(error.code, expected, error.message)
  if (syscall) t.is(error.syscall, syscall)
  return error
}

define('with no "error" listener, the printed warning carries what the handler threw', (t, runtime) => {
  const run = runtime.child('warning-cause')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ byte: 0 }])
  t.regex(run.stderr, /ERR_UFFD_HANDLER_THREW|handler threw/)
  t.regex(run.stderr, /cause-7731/)
})

define('opened unprivileged with the defaults: user-mode-only, and one warning that says what then fails', (t, runtime) => {
  const run = runtime.child('open-default', undefined, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'])
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ userModeOnly: true }])
  t.regex(run.stderr, /UFFD_USER_MODE_ONLY/)
  t.regex(run.stderr, /write\(2\)/)
  t.is(run.stderr.match(/UFFD_USER_MODE_ONLY/g)?.length, 1)
})

define('an anonymous mapping out of memory does not speak of huge pages', (t) => {
  // Within a process's address space (2^47 bytes on x64), but more than this one has free.
  const error = code(t, () => Region.anonymous(2 ** 47 - 2 ** 20), 'ENOMEM', 'mmap')
  t.notRegex(error.message, /huge/i)
  t.regex(error.message, /address space/)
})

define('a hugetlb region without enough huge pages says how many it needs, once', (t) => {
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

define('dirtyPages on a closed userfaultfd is EBADF whatever it negotiated', (t) => {
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

define('dirtyPages by the pagemap file names the file, not PAGEMAP_SCAN', (t) => {
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

define('adopting a file descriptor that is not a userfaultfd says so', (t) => {
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

define('an offset past the end of a region is reported as such, naming the offset and the region size', (t) => {
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

define('a region size that is negative, zero or too large is one kind of error, naming the size and its bound', (t) => {
  const makers = [(size: number) => Region.anonymous(size), (size: number) => Region.shmem(size), (size: number) => Region.hugetlb(size)]
  for (const make of makers) {
    for (const size of [-1, 0, 0.5, 2 ** 52, 2 ** 53]) {
      t.throws(() => make(size), outOfRange(/"size" .*>= 1 && <= \d+/), `${make} of ${size}`)
    }
    t.throws(() => make('4096' as unknown as number), wrongType)
  }
})

define('register and unregister: a negative, zero or too-large offset or length is one kind of error', (t) => {
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
