import test, { type ExecutionContext } from 'ava'
import { Region, Source, UffdError, type UffdErrorCode, Userfaultfd } from 'userfaultfd'
import { apiCases, registered } from './cases/api'
import { avaCases } from './cases/ava'
import { freeHugePages, HUGE_PAGE, patternPage, withHugePages } from './helpers/harness'

const PAGE = 4096

function code(t: ExecutionContext, fn: () => unknown, expected: UffdErrorCode, syscall?: string): UffdError {
  const error = t.throws(fn) as UffdError
  t.true(error instanceof UffdError, `${String(error)} is a UffdError`)
  t.is(error.code, expected, error.message)
  if (syscall) t.is(error.syscall, syscall)
  return error
}

test('probe reports the API version and the features and ioctls of the kernel, without side effects', (t) => {
  const probe = Userfaultfd.probe()
  t.is(probe.api, 0xaa)
  for (const feature of ['THREAD_ID', 'MISSING_SHMEM', 'MINOR_SHMEM', 'EXACT_ADDRESS'] as const) t.true(probe.features.includes(feature))
  t.true(probe.ioctls.includes('REGISTER'))
  t.deepEqual(Userfaultfd.probe(), probe)
})

test('a new userfaultfd negotiates the harmless features the kernel offers, and events only on request', (t) => {
  const plain = new Userfaultfd()
  t.true(plain.features.has('THREAD_ID'))
  t.true(plain.features.has('MINOR_SHMEM'))
  t.false(plain.features.has('EVENT_REMOVE'))
  t.false(plain.features.has('SIGBUS'))
  t.false(plain.userModeOnly)
  plain.close()
  const withEvents = new Userfaultfd({ features: ['EVENT_REMOVE', 'EVENT_UNMAP'] })
  t.true(withEvents.features.has('EVENT_REMOVE'))
  t.true(withEvents.features.has('EVENT_UNMAP'))
  withEvents.close()
  const userMode = new Userfaultfd({ userModeOnly: true })
  t.true(userMode.userModeOnly)
  userMode.close()
})

test('bad options throw: an unknown feature, a wrong fallback, wrong types', (t) => {
  code(t, () => new Userfaultfd({ features: ['NOPE' as 'MOVE'] }), 'EINVAL', 'UFFDIO_API')
  code(t, () => new Userfaultfd({ fallback: 'explode' as 'zero' }), 'EINVAL')
  t.throws(() => new Userfaultfd({ features: 'MOVE' as unknown as [] }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => new Userfaultfd({ timeoutMs: -1 }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new Userfaultfd({ timeoutMs: '1' as unknown as number }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => new Userfaultfd(42 as unknown as object), { instanceOf: TypeError })
})

test('regions: sizes round up to pages, bad sizes throw, and kinds and page sizes are reported', (t) => {
  const region = Region.anonymous(10_000)
  t.is(region.size, 12_288)
  t.is(region.pageSize, PAGE)
  t.is(region.kind, 'anonymous')
  t.true(region.owner)
  t.is(typeof region.address, 'bigint')
  t.is(region.buffer.byteLength, region.size)
  region.close()
  // As Node: a value of the wrong type is a TypeError, a number out of range (0 too) a RangeError.
  for (const size of ['4096', 4096n, null]) {
    t.throws(
      () => Region.anonymous(size as unknown as number),
      { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' },
      `size ${String(size)}`,
    )
  }
  for (const size of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 52, 2 ** 60]) {
    t.throws(() => Region.anonymous(size), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /"size"/ }, `size ${String(size)}`)
  }
  // Within a process's address space but more than this one has free: the machine's limit.
  code(t, () => Region.anonymous(2 ** 47 - 2 ** 20), 'ENOMEM', 'mmap')
  const shmem = Region.shmem(PAGE, { name: 'api-test' })
  t.is(shmem.kind, 'shmem')
  code(t, () => Region.anonymous(PAGE).alias(), 'EINVAL')
  shmem.close()
  code(t, () => Region.hugetlb(HUGE_PAGE, { pageSize: 12345 }), 'EINVAL')
})

test('a private shmem mapping keeps its writes: the file seen through an alias is untouched, discard shows it again', (t) => {
  const region = Region.shmem(2 * PAGE, { private: true })
  t.true(region.private)
  t.false(Region.shmem(PAGE).private)
  t.true(Region.anonymous(PAGE).private)
  t.throws(() => Region.shmem(PAGE, { private: 1 as unknown as boolean }), { instanceOf: TypeError })
  const alias = region.alias()
  t.false(alias.private)
  alias.bytes(0, PAGE).fill(3)
  const view = region.bytes(0, 2 * PAGE)
  t.is(view[0], 3, 'an unwritten private page shows the file')
  view[1] = 9
  t.is(alias.bytes(0, PAGE)[1], 3, 'the write made a private copy')
  region.discard(0, PAGE)
  t.is(region.bytes(0, PAGE)[1], 3, 'the private copy is dropped')
  alias.close()
  region.close()
})

test('hugetlb without enough reserved huge pages throws ENOMEM that says how to reserve them', (t) => {
  const tooMany = freeHugePages() + 1
  const error = code(t, () => Region.hugetlb(tooMany * HUGE_PAGE), 'ENOMEM', 'mmap')
  t.regex(error.message, /vm\.nr_hugepages/)
})

const [hugeTest, hugeTitle] = withHugePages(1, test, 'zero on hugetlbfs is refused: it has no zero page')
hugeTest(hugeTitle, (t) => {
  const uffd = new Userfaultfd()
  const region = Region.hugetlb(HUGE_PAGE)
  uffd.register(region)
  code(t, () => uffd.zero(region, 0, HUGE_PAGE), 'EOPNOTSUPP', 'UFFDIO_ZEROPAGE')
  code(t, () => uffd.copy(region, 0, new Uint8Array(PAGE)), 'EINVAL')
  t.is(uffd.copy(region, 0, new Uint8Array(HUGE_PAGE).fill(4)), HUGE_PAGE)
  t.is(new Uint8Array(region.buffer)[HUGE_PAGE - 1], 4)
  uffd.close()
  region.close()
})

test('a closed userfaultfd or region refuses every call with EBADF, and close is idempotent', (t) => {
  const { uffd, region } = registered(2)
  uffd.close()
  uffd.close()
  t.true(uffd.closed)
  code(t, () => uffd.copy(region, 0, new Uint8Array(PAGE)), 'EBADF')
  code(t, () => uffd.register(region), 'EBADF')
  code(t, () => uffd.handle(() => {}), 'EBADF')
  const buffer = region.buffer
  region.close()
  region[Symbol.dispose]()
  t.true(region.closed)
  t.is(buffer.byteLength, 0, 'the ArrayBuffer is detached')
  t.throws(() => region.buffer, { code: 'EBADF' })
  const fresh = new Userfaultfd()
  code(t, () => fresh.register(region), 'EBADF')
  fresh[Symbol.dispose]()
})

test('share and attach: tokens name live objects, anything else is refused', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(PAGE)
  const view = Region.attach(region.share())
  t.not(view, region, 'the same thread gets a view, not the owner')
  t.false(view.owner)
  t.is(Userfaultfd.attach(uffd.share()).features.size, uffd.features.size)
  for (const bad of [undefined, null, 3, {}, { type: 'userfaultfd.region' }]) {
    t.throws(() => Region.attach(bad as never), { instanceOf: TypeError })
  }
  t.throws(() => Region.attach({ type: 'userfaultfd.region', id: -1 }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  code(t, () => Region.attach({ type: 'userfaultfd.region', id: 987654321 }), 'EINVAL')
  code(t, () => Userfaultfd.attach({ type: 'userfaultfd.uffd', id: 987654321 }), 'EINVAL')
  const token = region.share()
  region.close()
  code(t, () => Region.attach(token), 'EINVAL')
  uffd.close()
  code(t, () => Userfaultfd.attach(uffd.share()), 'EINVAL')
})

test('handle and handleInWorker reject bad arguments', async (t) => {
  const uffd = new Userfaultfd()
  t.throws(() => uffd.handle('nope' as never), { instanceOf: TypeError })
  t.throws(() => uffd.handleInWorker(42 as never), { instanceOf: TypeError })
  await t.throwsAsync(uffd.handleInWorker(new URL('file:///nonexistent/pager.js')), { code: 'ERR_UFFD_WORKER' })
  uffd.close()
})

test('feature and ioctl lists are one type across the API, a read-only set that JSON prints as an array', (t) => {
  const probe = Userfaultfd.probe()
  const uffd = new Userfaultfd({ features: ['EVENT_REMOVE'] })
  const region = Region.anonymous(PAGE)
  const { ioctls } = uffd.register(region)
  const lists = [probe.features, probe.ioctls, uffd.features, ioctls]
  for (const list of lists) {
    t.is(Object.getPrototypeOf(list), Object.getPrototypeOf(probe.features), 'the same class everywhere')
    t.true(list instanceof Set)
    t.deepEqual(JSON.parse(JSON.stringify(list)), [...list], 'JSON prints the names, not {}')
    t.throws(() => (list as unknown as Set<string>).add('X'), { instanceOf: TypeError })
    t.throws(() => (list as unknown as Set<string>).delete([...list][0] as string), { instanceOf: TypeError })
  }
  t.true(probe.features.has('THREAD_ID'))
  t.true(probe.features.includes('THREAD_ID'), 'what code written for arrays asked still works')
  t.true(uffd.features.has('EVENT_REMOVE'))
  t.true(ioctls.has('COPY'))
  t.deepEqual(JSON.parse(JSON.stringify(uffd.register(region))), { ioctls: [...ioctls] })
  const printed = JSON.parse(JSON.stringify(probe))
  t.deepEqual(printed, { api: 0xaa, features: [...probe.features], ioctls: [...probe.ioctls] })
  t.true(printed.features.length > 5)
  // A set the API gave is accepted where the API takes a list.
  const again = new Userfaultfd({ features: uffd.features })
  t.true(again.features.has('EVENT_REMOVE'))
  again.close()
  uffd.close()
  region.close()
})

test('what the API returns prints in JSON: stats, latency, a prefetch, a source, an error', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  const source = Source.bytes(patternPage(0, PAGE, 4))
  uffd.register(region, { source })
  const prefetched = await uffd.prefetch(region)
  t.deepEqual(JSON.parse(JSON.stringify(prefetched)), prefetched)
  const stats = uffd.stats
  t.deepEqual(JSON.parse(JSON.stringify(stats)), stats)
  t.is(JSON.parse(JSON.stringify(uffd.latency())).count, 0)
  t.deepEqual(JSON.parse(JSON.stringify(source)), { kind: 'bytes', size: 4 * PAGE })
  const error = t.throws(() => uffd.copy(region, 100, new Uint8Array(PAGE))) as UffdError
  t.like(JSON.parse(JSON.stringify(error)), { code: 'EINVAL', syscall: 'UFFDIO_COPY' })
  uffd.close()
  region.close()
})

// register's refusals and the resolves outside a fault: the case table both runtimes run
// (cases/api.ts; Bun runs it in bun/api.test.ts).
avaCases(apiCases)
