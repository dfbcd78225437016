// Reliability: a handler that resolves a fault twice (or after the fallback did), the process
// forking while threads wait in faults, and the kernel's `sigbus-wp` and `events-wp` cases over
// anonymous memory, shmem and hugetlbfs. Real faults from worker threads and child processes; each
// test checks the bytes the faulting thread read, and that nobody stays asleep.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import test from 'ava'
import { type Fault, type ForkEvent, listen, type MemoryKind, type RangeEvent, Region, UffdError, Userfaultfd } from 'userfaultfd'
import { freeHugePages, HUGE_PAGE, makeRegion, patternByte, patternPage, Toucher, within, withToucher } from './helpers/harness'

const PAGE = 4096
const KINDS: MemoryKind[] = ['anonymous', 'shmem', 'hugetlb']

/** A promise and its resolve function, to hold a handler until the test lets it go. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open = () => {}
  const promise = new Promise<void>((resolve) => {
    open = resolve
  })
  return { promise, open }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Waits (polling) until `condition` holds; fails the test instead of hanging. */
function until(condition: () => boolean, what: string): Promise<void> {
  return within(
    (async () => {
      while (!condition()) await sleep(5)
    })(),
    what,
  )
}

/** What a resolving call did: the value it returned, or what it threw. */
type Outcome = { returned: unknown } | { thrown: unknown }
function attempt(resolve: () => unknown): Outcome {
  try {
    return { returned: resolve() }
  } catch (thrown) {
    return { thrown }
  }
}

/** The error events of a userfaultfd, as codes, in order. */
function errorCodes(uffd: Userfaultfd): string[] {
  const codes: string[] = []
  uffd.on('error', (error) => codes.push(error instanceof UffdError ? error.code : `untyped ${String(error)}`))
  return codes
}

/** The pattern bytes a reader of offsets 5, 100 and PAGE - 1 of page `page` should see. */
const probes = (page: number, pageSize = PAGE) => [5, 100, pageSize - 1].map((index) => page * pageSize + index)
const expected = (page: number, seed: number, pageSize = PAGE) =>
  [5, 100, pageSize - 1].map((index) => patternByte(page * pageSize, pageSize, index, seed))

const hugeSkip = (kind: MemoryKind, needed: number) =>
  kind === 'hugetlb' && freeHugePages() < needed
    ? ` (skipped: needs ${needed} free 2 MiB huge pages, found ${freeHugePages()}; sysctl -w vm.nr_hugepages=N)`
    : ''

// ---------------------------------------------------------------------------------------------
// Resolves twice. What the API does now (lib/fault.ts -> Userfaultfd::resolve in the core): a
// fault already resolved and woken, or settled by the fallback or a timeout, has left the table of
// faults in flight, and a second resolve of it returns 0 without any ioctl; a fault resolved with
// { wake: false } is still in flight, so a second resolve runs its ioctl, gets EEXIST (counted),
// wakes the thread and returns 0. These tests pin that, and that the first resolution's bytes win.
// ---------------------------------------------------------------------------------------------

type Resolve = 'copy' | 'copy-nowake' | 'zero'
const resolveWith = (fault: Fault, how: Resolve, seed: number): number =>
  how === 'zero' ? fault.zero() : fault.copy(patternPage(fault.offset, PAGE, 1, seed), { wake: how !== 'copy-nowake' })

for (const [first, second, eexist] of [
  ['copy', 'copy', 0],
  ['copy', 'zero', 0],
  ['zero', 'copy', 0],
  ['copy-nowake', 'copy', 1],
  ['copy-nowake', 'zero', 1],
] as const) {
  test(`resolves twice: ${first} then ${second}: the second maps nothing and returns 0, the reader gets the first's bytes, the next fault is served`, async (t) => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(4 * PAGE)
    const other = Region.anonymous(4 * PAGE)
    uffd.register(region)
    uffd.register(other)
    const errors = errorCodes(uffd)
    const outcomes: Array<{ first: Outcome; second: Outcome; resolved: boolean }> = []
    uffd.handle((fault) => {
      if (fault.region === other) {
        fault.copy(patternPage(fault.offset, PAGE, 1, 3))
        return
      }
      const one = attempt(() => resolveWith(fault, first, 1))
      const two = attempt(() => resolveWith(fault, second, 2))
      outcomes.push({ first: one, second: two, resolved: fault.resolved })
    })
    await withToucher([uffd, region, other], async (toucher) => {
      const firstBytes = first === 'zero' ? [0, 0, 0] : expected(1, 1)
      t.deepEqual((await toucher.read(region, { offsets: probes(1) })).bytes, firstBytes, "the first resolution's bytes")
      t.deepEqual(outcomes, [{ first: { returned: PAGE }, second: { returned: 0 }, resolved: true }])
      t.is(uffd.stats.eexist, eexist, eexist ? 'the second ioctl ran and got EEXIST' : 'no second ioctl')
      t.is(uffd.stats.resolutions.copy + uffd.stats.resolutions.zeropage, 1, 'one resolution mapped the page')
      t.is(uffd.stats.fallbacks, 0)
      t.is(uffd.stats.inFlight, 0, 'nothing left in flight')
      // The next fault, on another region, is served as usual.
      t.deepEqual((await toucher.read(other, { offsets: probes(2) })).bytes, expected(2, 3))
      await sleep(20)
      t.deepEqual(errors, [], 'a second resolve is silent: no error event')
    })
  })
}

test('resolves twice: a handler that throws after its copy gets ERR_UFFD_HANDLER_THREW, and its bytes stay', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const errors: UffdError[] = []
  uffd.on('error', (error) => errors.push(error))
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE, 1, 1))
    throw new Error('after the copy')
  })
  await withToucher([uffd, region], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: probes(2) })).bytes, expected(2, 1))
    await until(() => errors.length > 0, 'the error event')
    t.true(errors[0] instanceof UffdError)
    t.is(errors[0]?.code, 'ERR_UFFD_HANDLER_THREW')
    t.regex(errors[0]?.message ?? '', /had been resolved/)
    t.is((errors[0]?.cause as Error | undefined)?.message, 'after the copy')
    t.is(uffd.stats.fallbacks, 0)
  })
})

test('resolves twice: a copy after the timeout fallback returns 0; the reader got the fallback zeros, and the package serves on', async (t) => {
  const uffd = new Userfaultfd({ timeoutMs: 200 })
  const region = Region.anonymous(4 * PAGE)
  const other = Region.anonymous(4 * PAGE)
  uffd.register(region)
  uffd.register(other)
  const errors = errorCodes(uffd)
  const late = gate()
  let lateOutcome: Outcome | undefined
  uffd.handle(async (fault) => {
    if (fault.region === other) {
      fault.copy(patternPage(fault.offset, PAGE, 1, 3))
      return
    }
    await sleep(600)
    lateOutcome = attempt(() => fault.copy(patternPage(fault.offset, PAGE, 1, 1)))
    late.open()
  })
  await withToucher([uffd, region, other], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: probes(1) })).bytes, [0, 0, 0], 'the fallback (ZEROPAGE) answered')
    await within(late.promise, 'the late copy')
    t.deepEqual(lateOutcome, { returned: 0 })
    t.deepEqual((await toucher.read(region, { offsets: probes(1) })).bytes, [0, 0, 0], 'the late copy changed nothing')
    t.deepEqual((await toucher.read(other, { offsets: probes(2) })).bytes, expected(2, 3))
    t.is(uffd.stats.eexist, 0, 'the late copy ran no ioctl')
    t.is(uffd.stats.timeouts, 1)
    await sleep(20)
    t.deepEqual(errors, ['ERR_UFFD_TIMEOUT'])
  })
})

test('resolves twice: a stale fault, settled by the fallback, resolved again while its page faults anew, neither maps nor wakes the new fault', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const errors = errorCodes(uffd)
  let stale: Fault | undefined
  const secondFault = gate()
  const release = gate()
  let calls = 0
  uffd.handle(async (fault) => {
    calls++
    if (calls === 1) {
      stale = fault // returns without resolving: the fallback maps zeros
      return
    }
    secondFault.open()
    await release.promise
    fault.copy(patternPage(fault.offset, PAGE, 1, 5))
  })
  await withToucher([uffd, region], async (toucher) => {
    t.deepEqual((await toucher.read(region, { offsets: probes(1) })).bytes, [0, 0, 0])
    await until(() => errors.length > 0, 'the unresolved error')
    t.deepEqual(errors, ['ERR_UFFD_UNRESOLVED'])
    t.deepEqual(
      attempt(() => stale?.copy(patternPage(PAGE, PAGE, 1, 4))),
      { returned: 0 },
    )
    t.deepEqual((await toucher.read(region, { offsets: probes(1) })).bytes, [0, 0, 0], 'the stale copy mapped nothing')
    // The page goes and faults again: a new fault, held by the handler.
    region.discard(PAGE, PAGE)
    const read = toucher.read(region, { offsets: probes(1) })
    await within(secondFault.promise, 'the second fault')
    t.deepEqual(
      attempt(() => stale?.copy(patternPage(PAGE, PAGE, 1, 4))),
      { returned: 0 },
    )
    t.false(await toucher.answersWithin(read, 200), 'the stale resolve must not wake the new fault')
    release.open()
    t.deepEqual((await read).bytes, expected(1, 5), "the new fault's own bytes")
    t.is(uffd.stats.eexist, 0)
    t.deepEqual(errors, ['ERR_UFFD_UNRESOLVED'])
  })
})

// ---------------------------------------------------------------------------------------------
// The process forks with faults pending. Serial, and the only tests here with EVENT_FORK: with it,
// every spawn of this process (the sigbus-wp tests spawn) is a fork event of that userfaultfd.
// ---------------------------------------------------------------------------------------------

/** A userfaultfd with EVENT_FORK over `pages` registered pages, its error codes and fork events. */
function forking(pages: number) {
  const uffd = new Userfaultfd({ features: ['EVENT_FORK'] })
  const region = Region.anonymous(pages * PAGE)
  uffd.register(region)
  const errors = errorCodes(uffd)
  const forks: ForkEvent[] = []
  uffd.on('fork', (event) => forks.push(event))
  return { uffd, region, errors, forks }
}

test.serial(
  'fork with faults pending: spawnSync while 4 threads wait in faults held by the handler; then all are served and the fork event arrives',
  async (t) => {
    const { uffd, region, errors, forks } = forking(8)
    const release = gate()
    let held = 0
    uffd.handle(async (fault) => {
      held++
      await release.promise
      fault.copy(patternPage(fault.offset, PAGE, 1, 7))
    })
    const touchers = Array.from({ length: 4 }, () => new Toucher())
    try {
      const reads = touchers.map((toucher, i) => toucher.read(region, { offsets: probes(2 * i) }))
      await until(() => held === 4, 'four faults held')
      const child = spawnSync('/bin/true', { timeout: 10_000 })
      t.is(child.status, 0, `the spawn: ${child.error ?? child.signal}`)
      await until(() => forks.length > 0, 'the fork event')
      t.is(held, 4, 'no fault dispatched twice')
      release.open()
      const results = await Promise.all(reads)
      for (const [i, { bytes }] of results.entries()) t.deepEqual(bytes, expected(2 * i, 7), `reader ${i}`)
      t.is(forks.length, 1)
      t.deepEqual(
        forks[0]?.regions.map((r) => [r.address, r.size]),
        [[region.address, region.size]],
      )
      t.is(uffd.stats.fallbacks, 0)
      t.is(uffd.stats.inFlight, 0)
      t.deepEqual(errors, [])
    } finally {
      await Promise.all(touchers.map((toucher) => toucher.terminate()))
      for (const fork of forks) fork.child?.close()
      uffd.close()
      region.close()
    }
  },
)

test.serial(
  'fork with faults pending: a worker handler released as spawn() forks (resolves race the fork event); all served, nothing hangs',
  async (t) => {
    const { uffd, region, errors, forks } = forking(16)
    const shared = new Int32Array(new SharedArrayBuffer(8))
    await uffd.handleInWorker(join(__dirname, 'helpers', 'gated-pager.js'), { workerData: { gate: shared, seed: 9 } })
    const touchers = Array.from({ length: 4 }, () => new Toucher())
    try {
      // Each reader takes 4 faults in turn: the first is held, the others come as the fork runs.
      const reads = touchers.map((toucher, i) => toucher.read(region, { offsets: [0, 1, 2, 3].flatMap((k) => probes(4 * k + i)) }))
      await until(() => Atomics.load(shared, 1) === 4, 'four faults held')
      const exited = new Promise<number | null>((resolve, reject) => {
        const child = spawn('/bin/true')
        child.on('error', reject)
        child.on('exit', resolve)
      })
      Atomics.store(shared, 0, 1)
      Atomics.notify(shared, 0)
      t.is(await within(exited, 'the spawned child'), 0)
      const results = await Promise.all(reads)
      for (const [i, { bytes }] of results.entries()) {
        t.deepEqual(
          bytes,
          [0, 1, 2, 3].flatMap((k) => expected(4 * k + i, 9)),
          `reader ${i}`,
        )
      }
      await until(() => forks.length > 0, 'the fork event')
      t.is(Atomics.load(shared, 1), 16, 'each page dispatched once')
      t.is(uffd.stats.fallbacks, 0)
      t.deepEqual(errors, [])
      t.log({ parked: uffd.stats.parked, events: uffd.stats.events })
    } finally {
      await Promise.all(touchers.map((toucher) => toucher.terminate()))
      for (const fork of forks) fork.child?.close()
      uffd.close()
      region.close()
    }
  },
)

// ---------------------------------------------------------------------------------------------
// Kernel case sigbus-wp: the SIGBUS feature and a missing+wp registration. With SIGBUS the kernel
// sends no fault message for any fault of the range, missing or wp: the toucher gets SIGBUS. The
// kernel's case resolves both from its own SIGBUS handler (copy with WP, then unprotect) and goes
// on; a Node process cannot catch SIGBUS and resume, so each step runs in a child that dies of it.
// ---------------------------------------------------------------------------------------------

/** Runs reliability-child.js sigbus-wp KIND STEP; returns its JSON lines, signal and output. */
function sigbusChild(kind: MemoryKind, step: 'write' | 'unprotect') {
  const child = spawnSync(process.execPath, [join(__dirname, 'helpers', 'reliability-child.js'), 'sigbus-wp', kind, step], {
    timeout: 20_000,
    encoding: 'utf8',
  })
  const output = `stdout: ${child.stdout}\nstderr: ${child.stderr}`
  const lines = child.stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>)
  const step_ = (name: string) => lines.find((line) => line.step === name)
  return { signal: child.signal, output, step: step_ }
}

for (const kind of KINDS) {
  const skip = hugeSkip(kind, 2)
  const define = skip ? test.skip : test
  const pageSize = kind === 'hugetlb' ? HUGE_PAGE : PAGE

  define(
    `sigbus-wp on ${kind}: a write to a populated write-protected page is SIGBUS to the writer, not a fault for the handler${skip}`,
    (t) => {
      const { signal, output, step } = sigbusChild(kind, 'write')
      t.deepEqual(step('registered')?.features, ['SIGBUS'], output)
      t.true((step('registered')?.ioctls as string[] | undefined)?.includes('WRITEPROTECT'), output)
      t.is(step('populated')?.mapped, pageSize, output)
      t.is(step('read protected')?.byte, patternByte(0, pageSize, 5), `a read of a protected page does not fault: ${output}`)
      t.is(step('wrote'), undefined, `the write must not land, nor reach the handler: ${output}`)
      t.is(step('error'), undefined, output)
      t.is(signal, 'SIGBUS', output)
    },
  )

  define(`sigbus-wp on ${kind}: once unprotected the write lands with no signal; a missing page is SIGBUS to the toucher${skip}`, (t) => {
    const { signal, output, step } = sigbusChild(kind, 'unprotect')
    t.is(step('populated')?.mapped, pageSize, output)
    t.deepEqual(step('wrote'), { step: 'wrote', after: 0x99, neighbour: patternByte(0, pageSize, 100), faults: [] }, output)
    t.is(step('read missing'), undefined, `the missing page must not be readable: ${output}`)
    t.is(step('error'), undefined, output)
    t.is(signal, 'SIGBUS', output)
  })
}

// ---------------------------------------------------------------------------------------------
// Kernel case events-wp: the events case with the region also registered for wp. Pages arrive
// write-protected (COPY_MODE_WP); writes are wp faults the handler unprotects; discard() is a
// REMOVE event, and the removed pages fault again as missing pages, served again, protected again.
// ---------------------------------------------------------------------------------------------

for (const kind of KINDS) {
  const skip = hugeSkip(kind, 4)
  ;(skip ? test.skip : test)(
    `events-wp on ${kind}: remove events arrive; faults after them are served, wp faults resolved${skip}`,
    async (t) => {
      const uffd = new Userfaultfd({ features: ['EVENT_REMOVE'] })
      const region = makeRegion(kind, 4)
      const P = region.pageSize
      uffd.register(region, { missing: true, wp: true })
      const errors = errorCodes(uffd)
      const faults: string[] = []
      let served = 0
      uffd.handle((fault) => {
        faults.push(`${fault.kind} ${fault.offset / P}${fault.write ? ' write' : ''}`)
        if (fault.kind === 'missing') fault.copy(patternPage(fault.offset, P, 1, ++served), { writeProtect: true })
        else fault.unprotect()
      })
      const removed: RangeEvent[] = []
      uffd.on('remove', (event) => removed.push(event))
      const at = (page: number, index: number) => page * P + index
      await withToucher([uffd, region], async (toucher) => {
        // Page 1: served protected, written (wp), removed, served again, written again.
        t.deepEqual((await toucher.read(region, { offsets: [at(1, 5)] })).bytes, [patternByte(P, P, 5, 1)])
        t.deepEqual((await toucher.read(region, { offsets: [at(1, 5)], write: 0x99 })).bytes, [0x99])
        region.discard(P, P)
        await until(() => removed.length === 1, 'the remove event of page 1')
        t.like(removed[0], { region, offset: P, length: P })
        t.deepEqual((await toucher.read(region, { offsets: [at(1, 5)] })).bytes, [patternByte(P, P, 5, 2)], 'served again')
        t.deepEqual((await toucher.read(region, { offsets: [at(1, 7)], write: 0x42 })).bytes, [0x42])
        // Page 2: removed while still protected, then served and written again.
        t.deepEqual((await toucher.read(region, { offsets: [at(2, 100)] })).bytes, [patternByte(2 * P, P, 100, 3)])
        region.discard(2 * P, P)
        await until(() => removed.length === 2, 'the remove event of page 2')
        t.like(removed[1], { region, offset: 2 * P, length: P })
        t.deepEqual((await toucher.read(region, { offsets: [at(2, 100)] })).bytes, [patternByte(2 * P, P, 100, 4)], 'served again')
        t.deepEqual((await toucher.read(region, { offsets: [at(2, 100)], write: 0x17 })).bytes, [0x17])
        t.deepEqual(faults, ['missing 1', 'wp 1 write', 'missing 1', 'wp 1 write', 'missing 2', 'missing 2', 'wp 2 write'])
        t.is(uffd.stats.events, 2)
        t.is(uffd.stats.fallbacks, 0)
        t.deepEqual(errors, [])
      })
    },
  )
}

// events-wp on a peer's memory (remote): a C peer registers its anonymous memory missing+wp with
// EVENT_REMOVE/REMAP/UNMAP and hands the userfaultfd over; it faults, writes, discards, moves and
// unmaps, and checks every byte itself (helpers/wp-peer.c).
const peerDir = mkdtempSync(join(tmpdir(), 'uffd-reliability-'))
const wpPeer = join(peerDir, 'wp-peer')
execFileSync('cc', ['-O2', '-Wall', '-o', wpPeer, join(__dirname, '..', '..', '..', '__test__', 'helpers', 'wp-peer.c')])
test.after.always(() => rmSync(peerDir, { recursive: true, force: true }))

async function servePeer(mode: 'events' | 'moved') {
  const socket = join(peerDir, `${mode}.sock`)
  const listener = listen(socket, { features: ['EVENT_REMOVE', 'EVENT_REMAP', 'EVENT_UNMAP', 'PAGEFAULT_FLAG_WP'] })
  const child = spawn(wpPeer, [socket, mode], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout?.on('data', (chunk) => {
    out += chunk
  })
  child.stderr?.on('data', (chunk) => {
    out += chunk
  })
  const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    // 'close', not 'exit': the peer's last lines may still be in its pipes when it exits.
    child.on('close', (code, signal) => resolve({ code, signal })),
  )
  const { uffd, regions } = await within(listener.accept(), 'the handshake')
  listener.close()
  const seen: string[] = []
  const faults: string[] = []
  uffd.on('remove', (e) => seen.push(`remove ${e.offset} ${e.length}`))
  const moved: Region[] = []
  uffd.on('remap', (e) => {
    seen.push(`remap ${e.offset} ${e.length}`)
    if (e.moved) moved.push(e.moved)
  })
  uffd.on('unmap', (e) => seen.push(`unmap ${e.offset} ${e.length}`))
  const errors = new Map<string, number>()
  uffd.on('error', (e) => errors.set(e.code, (errors.get(e.code) ?? 0) + 1))
  uffd.handle((fault) => {
    const where = moved.includes(fault.region) ? 'moved ' : ''
    faults.push(`${where}${fault.kind} ${fault.offset / PAGE}${fault.write ? ' write' : ''}`)
    if (fault.kind === 'missing') fault.copy(patternPage(fault.offset, PAGE), { writeProtect: true })
    else fault.unprotect()
  })
  try {
    const { code, signal } = await within(exit, 'the peer process', 20_000)
    return { code, signal, out, seen, faults, errors, regions, moved, stats: uffd.stats }
  } finally {
    child.kill('SIGKILL')
    uffd.close()
  }
}

test('events-wp on a peer’s memory: remove, remap and unmap events arrive; faults around them are served, wp faults resolved', async (t) => {
  const { code, signal, out, seen, faults, errors } = await servePeer('events')
  t.is(code, 0, `${signal ?? ''}\n${out}`)
  t.regex(out, /done, 0 wrong/)
  t.deepEqual(seen.slice(0, 2), [`remove ${PAGE} ${PAGE}`, `remap ${4 * PAGE} ${4 * PAGE}`], out)
  t.true(seen.includes(`unmap ${8 * PAGE} ${4 * PAGE}`), `${seen}`)
  t.deepEqual(faults, ['missing 1', 'wp 1 write', 'missing 1', 'wp 1 write', 'missing 4', 'missing 14', 'wp 14 write'])
  t.deepEqual(
    [...errors.keys()].filter((code) => code !== 'ERR_UFFD_PEER_GONE'),
    [],
    out,
  )
})

test('events-wp on a peer’s memory: after a remap, the moved pages still fault at their new place and are served (no thread left spinning)', async (t) => {
  const { code, signal, out, faults, errors, moved } = await servePeer('moved')
  t.is(code, 0, `exit ${code} ${signal ?? ''}\n${out}`)
  t.regex(out, /done, 0 wrong/)
  // The remap event names the range at its new place: a remote region of the 4 moved pages, whose
  // faults (a missing one at moved page 1, a wp one at moved page 0) reach the handler.
  t.is(moved.length, 1)
  t.like(moved[0], { kind: 'remote', size: 4 * PAGE })
  t.true(faults.includes('moved missing 1') && faults.includes('moved wp 0 write'), `${faults}`)
  t.deepEqual(
    [...errors.keys()].filter((code) => code !== 'ERR_UFFD_PEER_GONE'),
    [],
    out,
  )
})

// The same race in this process: a thread whose wp fault was just unprotected discards the page
// and reads it again at once, so that its next (missing) fault may arrive before the unprotect has
// returned to the handler.
for (const kind of ['anonymous', 'shmem'] as const) {
  test(`events-wp on ${kind}: a thread writes (wp), discards and re-reads its page at once, 32 times; every fault served`, async (t) => {
    const uffd = new Userfaultfd({ features: ['EVENT_REMOVE'] })
    const region = makeRegion(kind, 32)
    uffd.register(region, { missing: true, wp: true })
    const errors = errorCodes(uffd)
    uffd.handle((fault) => {
      if (fault.kind === 'missing') fault.copy(patternPage(fault.offset, PAGE), { writeProtect: true })
      else fault.unprotect()
    })
    const worker = new Worker(
      `const { Region } = require('userfaultfd'); const { workerData, parentPort } = require('node:worker_threads');
       const region = Region.attach(workerData.shared); const bytes = new Uint8Array(region.buffer); const out = [];
       for (let page = 0; page < 32; page++) {
         const at = page * 4096;
         out.push(bytes[at + 5]);      // missing: served protected
         bytes[at + 5] = 0x99;         // wp: unprotected
         region.discard(at, 4096);     // REMOVE
         out.push(bytes[at + 5]);      // missing again, at once
       }
       parentPort.postMessage(out)`,
      { eval: true, workerData: { shared: region.share() } },
    )
    try {
      const bytes = await within(new Promise<number[]>((resolve) => worker.once('message', resolve)), 'the worker', 10_000)
      t.deepEqual(
        bytes,
        Array.from({ length: 32 }, (_, page) => [patternByte(page * PAGE, PAGE, 5), patternByte(page * PAGE, PAGE, 5)]).flat(),
      )
      t.deepEqual(errors, [])
    } finally {
      t.log({
        duplicates: uffd.stats.duplicates,
        missing: uffd.stats.faults.missing,
        wp: uffd.stats.faults.wp,
        inFlight: uffd.stats.inFlight,
      })
      // Close first: it wakes a thread left asleep in a fault, which terminate() could not end.
      uffd.close()
      await worker.terminate()
      region.close()
    }
  })
}
