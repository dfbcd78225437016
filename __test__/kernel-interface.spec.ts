// The rest of the kernel interface: write-protection (sync and async), COPY/CONTINUE with WP,
// POISON, MOVE, the SIGBUS feature, REMOVE events and resolves racing them, and opening the fd
// without privileges. Each test checks bytes or signals, not only return values.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import test from 'ava'
import { type Fault, type RangeEvent, Region, Userfaultfd } from 'userfaultfd'
import { patternByte, patternPage, Toucher, within, withToucher } from './helpers/harness'

const PAGE = 4096
const child = (scenario: string, prefix: string[] = []) => {
  const [command, ...args] = [...prefix, process.execPath, join(__dirname, 'helpers', 'child.js'), scenario]
  return spawnSync(command as string, args, { timeout: 20_000, encoding: 'utf8' })
}

test('wp: a write to a page copied with writeProtect is a wp fault; unprotect lets it land', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region, { missing: true, wp: true })
  const faults: Array<Pick<Fault, 'kind' | 'offset' | 'write'>> = []
  uffd.handle((fault) => {
    faults.push({ kind: fault.kind, offset: fault.offset, write: fault.write })
    if (fault.kind === 'missing') fault.copy(patternPage(fault.offset, PAGE), { writeProtect: true })
    else fault.unprotect()
  })
  await withToucher([uffd, region], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: [PAGE + 5] })).bytes, [patternByte(PAGE, PAGE, 5)])
    t.deepEqual((await toucher.read(region, { offsets: [PAGE + 5], write: 0x99 })).bytes, [0x99])
    t.deepEqual(faults, [
      { kind: 'missing', offset: PAGE, write: false },
      { kind: 'wp', offset: PAGE, write: true },
    ])
    t.is(uffd.stats.faults.wp, 1)
    t.is(uffd.stats.resolutions.writeProtect, 1)
  })
})

test('wp-unpopulated: protecting never-touched pages makes their first write a wp fault', async (t) => {
  const uffd = new Userfaultfd()
  t.true(uffd.features.has('WP_UNPOPULATED'))
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region, { wp: true })
  uffd.writeProtect(region, 0, region.size, true)
  const kinds: string[] = []
  uffd.handle((fault) => {
    kinds.push(fault.kind)
    fault.unprotect()
  })
  await withToucher([uffd, region], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: [2 * PAGE + 1], write: 0x42 })).bytes, [0x42])
    t.deepEqual(kinds, ['wp'])
    t.deepEqual((await toucher.read(region, { offsets: [PAGE] })).bytes, [0], 'a read of a protected page does not fault')
    t.deepEqual(kinds, ['wp'])
  })
})

test('a wp fault whose handler does nothing is unprotected by the fallback', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(2 * PAGE)
  uffd.register(region, { wp: true })
  uffd.writeProtect(region, 0, region.size, true)
  uffd.handle(() => {})
  await withToucher([uffd, region], async (toucher) => {
    const error = within(new Promise<{ code: string }>((resolve) => uffd.once('error', resolve)), 'an error event')
    t.deepEqual((await toucher.read(region, { offsets: [7], write: 0x11 })).bytes, [0x11])
    t.is((await error).code, 'ERR_UFFD_UNRESOLVED')
  })
})

test('minor-wp: continue with writeProtect maps the cached page protected; the next write faults', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.shmem(4 * PAGE)
  const alias = region.alias()
  alias.bytes(PAGE, PAGE).set(patternPage(PAGE, PAGE))
  uffd.register(region, { minor: true, wp: true })
  const kinds: string[] = []
  uffd.handle((fault) => {
    kinds.push(fault.kind)
    if (fault.kind === 'minor') fault.continue({ writeProtect: true })
    else fault.unprotect()
  })
  await withToucher([alias, uffd, region], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: [PAGE + 1] })).bytes, [patternByte(PAGE, PAGE, 1)])
    t.deepEqual((await toucher.read(region, { offsets: [PAGE + 2], write: 0x33 })).bytes, [0x33])
    t.deepEqual(kinds, ['minor', 'wp'])
    t.is(alias.bytes(PAGE + 2, 1)[0], 0x33, 'the write reached the shared page')
  })
})

for (const method of ['scan', 'pagemap'] as const) {
  test(`dirtyPages (${method}): WP_ASYNC reports the pages written since the last clear, with no fault`, (t) => {
    const uffd = new Userfaultfd({ features: ['WP_ASYNC'] })
    const region = Region.anonymous(16 * PAGE)
    uffd.register(region, { wp: true })
    uffd.writeProtect(region, 0, region.size, true)
    const bytes = new Uint8Array(region.buffer)
    for (const page of [1, 5, 9]) bytes[page * PAGE + 3] = page
    t.deepEqual(
      uffd.dirtyPages(region, { method }),
      [1, 5, 9].map((page) => page * PAGE),
    )
    t.deepEqual(
      uffd.dirtyPages(region, { clear: true, method }),
      [1, 5, 9].map((page) => page * PAGE),
    )
    t.deepEqual(uffd.dirtyPages(region, { method }), [], 'cleared')
    bytes[2 * PAGE] = 1
    bytes[9 * PAGE] = 2
    t.deepEqual(uffd.dirtyPages(region, { method }), [2 * PAGE, 9 * PAGE])
    t.is(uffd.stats.faults.wp, 0, 'the kernel resolved the writes itself')
    t.is(bytes[5 * PAGE + 3], 5)
    uffd.close()
    region.close()
  })
}

test('dirtyPages needs WP_ASYNC', (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(PAGE)
  uffd.register(region, { wp: true })
  t.throws(() => uffd.dirtyPages(region), { code: 'EOPNOTSUPP', message: /WP_ASYNC/ })
  uffd.close()
  region.close()
})

test.serial(
  'move (serial: a fork by a concurrent spawn makes pages shared, and MOVE refuses shared pages with EBUSY): fault.move() maps another region’s pages without a copy and empties the source',
  async (t) => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(8 * PAGE)
    const source = Region.anonymous(8 * PAGE)
    source.bytes().set(patternPage(0, PAGE, 8))
    uffd.register(region)
    uffd.handle((fault) => {
      t.is(fault.move(source, fault.offset, { length: 2 * PAGE }), 2 * PAGE)
    })
    const toucher = new Toucher()
    try {
      t.deepEqual((await toucher.read(region, { offsets: [3 * PAGE + 5, 4 * PAGE + 100] })).bytes, [
        patternByte(3 * PAGE, PAGE, 5),
        patternByte(4 * PAGE, PAGE, 100),
      ])
      t.is(source.bytes(3 * PAGE, 1)[0], 0, 'the source page is empty now')
      t.is(source.bytes(2 * PAGE, 1)[0], patternByte(2 * PAGE, PAGE, 0), 'other source pages stay')
      t.is(uffd.stats.resolutions.move, 1)
      t.is(uffd.move(region, 0, source, 0, PAGE), PAGE)
      t.is(region.bytes(0, 1)[0], patternByte(0, PAGE, 0))
      t.throws(() => uffd.move(region, 6 * PAGE, source, 0, PAGE), { code: 'ENOENT' }, 'a hole in the source')
      t.is(uffd.move(region, 6 * PAGE, source, 0, PAGE, { allowSourceHoles: true }), PAGE, 'a hole counts as moved')
      const shmem = Region.shmem(PAGE)
      t.throws(() => uffd.move(region, 7 * PAGE, shmem, 0, PAGE), { code: 'EINVAL' })
      shmem.close()
    } finally {
      await toucher.terminate()
      uffd.close()
      region.close()
      source.close()
    }
  },
)

for (const scenario of ['fault-poison', 'range-poison', 'sigbus-feature'] as const) {
  test(`${scenario}: the thread that touches the page gets SIGBUS`, (t) => {
    const result = child(scenario)
    t.is(result.signal, 'SIGBUS', `stdout: ${result.stdout}\nstderr: ${result.stderr}`)
    if (scenario === 'range-poison') t.regex(result.stdout, /page 0 still served: 4096 1/)
    if (scenario === 'sigbus-feature') t.regex(result.stdout, /features true/)
    t.notRegex(result.stdout, /^read /m)
  })
}

test('events: discard() of registered pages is a remove event, and the pages fault again', async (t) => {
  const uffd = new Userfaultfd({ features: ['EVENT_REMOVE'] })
  const region = Region.anonymous(8 * PAGE)
  uffd.register(region)
  let served = 0
  uffd.handle((fault) => {
    served++
    fault.copy(patternPage(fault.offset, PAGE, 1, served))
  })
  const removed: RangeEvent[] = []
  uffd.on('remove', (event) => removed.push(event))
  await withToucher([uffd, region], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: [2 * PAGE] })).bytes, [patternByte(2 * PAGE, PAGE, 0, 1)])
    region.discard(2 * PAGE, 2 * PAGE)
    await within(
      (async () => {
        while (removed.length === 0) await new Promise((resolve) => setTimeout(resolve, 5))
      })(),
      'the remove event',
    )
    t.is(removed[0]?.region, region)
    t.is(removed[0]?.offset, 2 * PAGE)
    t.is(removed[0]?.length, 2 * PAGE)
    t.deepEqual((await toucher.read(region, { offsets: [2 * PAGE] })).bytes, [patternByte(2 * PAGE, PAGE, 0, 2)], 'served again')
    t.is(uffd.stats.faults.missing, 2)
    t.is(uffd.stats.events, 1)
  })
})

test('mmap-changing: resolves racing a stream of remove events are parked and retried, never lost', async (t) => {
  const uffd = new Userfaultfd({ features: ['EVENT_REMOVE'] })
  const region = Region.anonymous(64 * PAGE)
  const churn = Region.anonymous(PAGE)
  uffd.register(region)
  let removes = 0
  uffd.on('remove', () => removes++)
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE))
  })
  // A worker discards page 0 over and over: each discard is an event the loop must read, and
  // while one is unread every resolve gets EAGAIN.
  const discarder = new Toucher()
  const toucher = new Toucher()
  try {
    const discarding = discarder.read(region, { offsets: [0], discard: { offset: 0, times: 20_000 } })
    const offsets = Array.from({ length: 63 }, (_, i) => (i + 1) * PAGE + 5)
    const { bytes } = await toucher.read(region, { offsets })
    await discarding
    t.deepEqual(
      bytes,
      offsets.map((at) => patternByte(at - 5, PAGE, 5)),
    )
    t.true(removes > 0)
    t.log({ removes, parked: uffd.stats.parked, fallbacks: uffd.stats.fallbacks })
    t.is(uffd.stats.errors, 0)
  } finally {
    await Promise.all([toucher.terminate(), discarder.terminate()])
    uffd.close()
    region.close()
    churn.close()
  }
})

test('an unprivileged user gets user-mode-only faults, and a refusal that says what to grant', (t) => {
  const result = child('unprivileged', ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'])
  t.is(result.status, 0, result.stderr)
  const [served, fork, refused] = result.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line))
  t.deepEqual(served, { userModeOnly: true, copied: PAGE })
  t.true(fork.forkRefused, 'EVENT_FORK needs CAP_SYS_PTRACE')
  t.is(fork.code, 'EPERM')
  t.regex(fork.message, /EVENT_FORK needs CAP_SYS_PTRACE/)
  t.true(refused.refused)
  t.is(refused.code, 'EPERM')
  t.regex(refused.message, /vm\.unprivileged_userfaultfd/)
  t.regex(refused.message, /\/dev\/userfaultfd/)
  t.regex(refused.message, /CAP_SYS_PTRACE/)
})
