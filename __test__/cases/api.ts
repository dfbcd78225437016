// The calls of the API refusing what is wrong before any ioctl, and working after: register and the
// resolves outside a fault. Run under Node.js (api.spec.ts) and Bun (bun/api.test.ts).
import { Region, Userfaultfd } from 'userfaultfd'
import { table } from './check'
import { code } from './errors'

const { table: apiCases, define } = table()

export { apiCases }

const PAGE = 4096

/** A userfaultfd with an anonymous region of `pages` pages registered. */
export function registered(pages = 4) {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(pages * PAGE)
  uffd.register(region)
  return { uffd, region }
}

define('register refuses MINOR on anonymous memory, an empty mode and bad ranges, before any ioctl', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  t.regex(code(t, () => uffd.register(region, { minor: true }), 'EINVAL', 'UFFDIO_REGISTER').message, /anonymous/)
  code(t, () => uffd.register(region, { missing: false }), 'EINVAL')
  code(t, () => uffd.register(region, { offset: 1 }), 'EINVAL')
  t.throws(() => uffd.register(region, { offset: PAGE, length: 4 * PAGE }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => uffd.register({} as Region), { instanceOf: TypeError })
  const { ioctls } = uffd.register(region, { offset: PAGE, length: 2 * PAGE })
  t.true(ioctls.has('COPY'))
  t.true(ioctls.has('ZEROPAGE'))
  t.true(ioctls.has('WAKE'))
  const shmem = Region.shmem(2 * PAGE)
  t.true(uffd.register(shmem, { minor: true }).ioctls.has('CONTINUE'))
  uffd.unregister(shmem)
  shmem.close()
  uffd.close()
  region.close()
})

define('resolves outside a fault prefill memory, and bad input throws before the ioctl', (t) => {
  const { uffd, region } = registered(4)
  const page = new Uint8Array(PAGE).fill(9)
  code(t, () => uffd.copy(region, 1, page), 'EINVAL', 'UFFDIO_COPY')
  t.regex(code(t, () => uffd.copy(region, 0, new Uint8Array(100)), 'EINVAL').message, /page size/)
  const outOfRange = { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' }
  t.throws(() => uffd.copy(region, 0, new Uint8Array(0)), outOfRange)
  t.throws(() => uffd.copy(region, 4 * PAGE, page), outOfRange)
  t.throws(() => uffd.zero(region, 0, 0), { ...outOfRange, message: /UFFDIO_ZEROPAGE/ })
  t.throws(() => uffd.zero(region, 0, 5 * PAGE), outOfRange)
  code(t, () => uffd.continue(region, 0, PAGE), 'EINVAL', 'UFFDIO_CONTINUE')
  t.throws(() => uffd.copy(region, 0, 'bytes' as unknown as Uint8Array), { instanceOf: TypeError })
  t.throws(() => uffd.copy(region, -4096, page), outOfRange)
  t.throws(() => uffd.zero(region, 0, 2 ** 64), outOfRange)
  t.throws(() => uffd.zero(region, 0, PAGE, { wake: 'yes' as unknown as boolean }), { instanceOf: TypeError })
  const other = Region.anonymous(PAGE)
  code(t, () => uffd.copy(other, 0, page), 'EINVAL')
  other.close()
  // Still working after all that: prefill two pages, then read them with no fault.
  t.is(uffd.copy(region, 0, new DataView(new ArrayBuffer(2 * PAGE))), 2 * PAGE)
  t.is(uffd.zero(region, 2 * PAGE, PAGE), PAGE)
  t.is(uffd.copy(region, 3 * PAGE, page.buffer), PAGE)
  t.is(new Uint8Array(region.buffer)[3 * PAGE + 7], 9)
  t.is(uffd.stats.faults.missing, 0)
  const eexist = code(t, () => uffd.copy(region, 0, page), 'EEXIST', 'UFFDIO_COPY')
  t.is(eexist.errno, -17)
  t.regex(eexist.message, /already mapped/)
  uffd.close()
  region.close()
})
