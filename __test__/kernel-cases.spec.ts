// Cases of the kernel's tools/testing/selftests/mm/uffd-unit-tests.c, named as there, over the
// memory types they run on there. The rest are mapped to their tests in KERNEL-CASES.md.
import test from 'ava'
import { Region, Userfaultfd } from 'userfaultfd'
import { freeHugePages, HUGE_PAGE, kindOf, MEMORY_TYPES, type MemoryType, makeMemory } from './helpers/harness'

const available = (type: MemoryType) => kindOf(type) !== 'hugetlb' || freeHugePages() >= 2

test('uffd-api: an unknown feature is refused, and a second UFFDIO_API is EINVAL (cargo test ioctl::tests)', (t) => {
  t.throws(() => new Userfaultfd({ features: ['NOT_A_FEATURE' as 'MOVE'] }), { code: 'EINVAL', message: /unknown feature/ })
  const probe = Userfaultfd.probe()
  t.is(probe.api, 0xaa)
})

for (const type of MEMORY_TYPES) {
  const kind = kindOf(type)
  const define = available(type) ? test : test.skip
  define(`register-ioctls on ${type}${available(type) ? '' : ' (skipped: needs 2 free huge pages)'}`, (t) => {
    const uffd = new Userfaultfd()
    for (const missing of [false, true]) {
      for (const wp of [false, true]) {
        for (const minor of [false, true]) {
          const region = makeMemory(type, 2)
          const mode = { missing, wp, minor }
          if (!missing && !wp && !minor) {
            t.throws(() => uffd.register(region, mode), { code: 'EINVAL' }, 'an empty mode')
          } else if (minor && kind === 'anonymous') {
            t.throws(() => uffd.register(region, mode), { code: 'EINVAL' }, 'MINOR on anonymous memory')
          } else {
            const { ioctls } = uffd.register(region, mode)
            const label = JSON.stringify(mode)
            t.true(ioctls.has('WAKE'), label)
            // As the kernel's case checks: what a mode needs is offered. (This kernel offers COPY and,
            // off hugetlbfs, ZEROPAGE to every mode; hugetlbfs never offers ZEROPAGE.)
            t.true(ioctls.has('COPY'), `${label} COPY`)
            t.is(ioctls.has('ZEROPAGE'), kind !== 'hugetlb', `${label} ZEROPAGE`)
            if (minor) t.true(ioctls.has('CONTINUE'), `${label} CONTINUE`)
            if (wp) t.true(ioctls.has('WRITEPROTECT'), `${label} WRITEPROTECT`)
            uffd.unregister(region)
          }
          region.close()
        }
      }
    }
    uffd.close()
  })

  define(`zeropage on ${type}${available(type) ? '' : ' (skipped: needs 2 free huge pages)'}`, (t) => {
    const uffd = new Userfaultfd()
    const region = makeMemory(type, 2)
    const { ioctls } = uffd.register(region)
    if (kind === 'hugetlb') {
      t.false(ioctls.has('ZEROPAGE'))
      t.throws(() => uffd.zero(region, 0, region.pageSize), { code: 'EOPNOTSUPP' })
    } else {
      t.is(uffd.zero(region, 0, region.pageSize), region.pageSize)
      t.throws(() => uffd.zero(region, 0, region.pageSize), { code: 'EEXIST' }, 'a retry finds the page')
      t.is(
        region.bytes(0, 8).reduce((a, b) => a + b, 0),
        0,
      )
    }
    uffd.close()
    region.close()
  })
}

const hugeDefine = available('hugetlb') ? test : test.skip
hugeDefine(
  `zeropage region sizes follow the page size of hugetlb${available('hugetlb') ? '' : ' (skipped: needs free 2 MiB huge pages)'}`,
  (t) => {
    const region = Region.hugetlb(1)
    t.is(region.size, HUGE_PAGE)
    region.close()
  },
)
