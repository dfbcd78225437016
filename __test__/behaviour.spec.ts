// The fault path's rules: DONTWAKE, read and write faults, readahead, EEXIST, one dispatch per
// page, the self-fault guard, fallbacks for handlers that fail, and closing with faults pending.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import test from 'ava'
import { type Fault, Region, Source, Userfaultfd } from 'userfaultfd'
import { nextError, patternByte, patternPage, Reader, within, withReader } from './helpers/harness'

const PAGE = 4096

function anonymous(pages: number, options?: ConstructorParameters<typeof Userfaultfd>[0]) {
  const uffd = new Userfaultfd(options)
  const region = Region.anonymous(pages * PAGE)
  uffd.register(region)
  return { uffd, region }
}

/** A promise and its resolve function, to hold a handler until the test lets it go. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open = () => {}
  const promise = new Promise<void>((resolve) => {
    open = resolve
  })
  return { promise, open }
}

test('dontwake: copy with { wake: false } leaves the thread asleep until fault.wake()', async (t) => {
  const { uffd, region } = anonymous(4)
  const resolved = gate()
  const release = gate()
  uffd.handle(async (fault) => {
    t.is(fault.copy(patternPage(fault.offset, PAGE), { wake: false }), PAGE)
    resolved.open()
    await release.promise
    fault.wake()
  })
  await withReader([uffd, region], async (reader) => {
    const read = reader.read(region, { offsets: [PAGE + 5] })
    await within(resolved.promise, 'the copy')
    t.false(await reader.answersWithin(read, 300), 'the reader must still be asleep')
    release.open()
    t.deepEqual((await read).bytes, [patternByte(PAGE, PAGE, 5)])
    t.is(uffd.stats.resolutions.wake, 1)
  })
})

test('dontwake: uffd.wake() over the range wakes a thread resolved without waking', async (t) => {
  const { uffd, region } = anonymous(4)
  const resolved = gate()
  uffd.handle(async (fault) => {
    uffd.copy(region, fault.offset, patternPage(fault.offset, PAGE), { wake: false })
    resolved.open()
    await new Promise((resolve) => setTimeout(resolve, 300))
    uffd.wake(region, 0, region.size)
  })
  await withReader([uffd, region], async (reader) => {
    const read = reader.read(region, { offsets: [2 * PAGE + 1] })
    await within(resolved.promise, 'the copy')
    t.false(await reader.answersWithin(read, 150), 'the reader must still be asleep')
    t.deepEqual((await read).bytes, [patternByte(2 * PAGE, PAGE, 1)])
    t.is(uffd.stats.fallbacks, 0)
  })
})

test('a resolve with { wake: false } that is never woken is woken at timeoutMs, with ERR_UFFD_NOT_WOKEN', async (t) => {
  // Long enough that a main thread blocked by another test (a spawnSync) still runs the handler in time.
  const { uffd, region } = anonymous(2, { timeoutMs: 2_000 })
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE), { wake: false })
  })
  await withReader([uffd, region], async (reader) => {
    const error = nextError(uffd)
    t.deepEqual((await reader.read(region, { offsets: [5] })).bytes, [patternByte(0, PAGE, 5)])
    t.is((await error).code, 'ERR_UFFD_NOT_WOKEN')
  })
})

test('write faults say write: true and read faults say false; the written byte lands', async (t) => {
  const { uffd, region } = anonymous(4)
  const seen: Array<[number, boolean]> = []
  uffd.handle((fault) => {
    seen.push([fault.offset, fault.write])
    fault.copy(patternPage(fault.offset, PAGE))
  })
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [PAGE + 3], write: 0x77 })).bytes, [0x77])
    t.deepEqual((await reader.read(region, { offsets: [2 * PAGE + 5] })).bytes, [patternByte(2 * PAGE, PAGE, 5)])
    t.deepEqual(seen, [
      [PAGE, true],
      [2 * PAGE, false],
    ])
    t.is(new Uint8Array(region.buffer)[PAGE + 5], patternByte(PAGE, PAGE, 5), 'the rest of the page is the copied bytes')
  })
})

test('readahead: one copy of 16 pages answers the fault and maps the 15 after it', async (t) => {
  const { uffd, region } = anonymous(32)
  const faults: Fault[] = []
  uffd.handle((fault) => {
    faults.push(fault)
    t.is(fault.copy(patternPage(fault.offset, PAGE, 16)), 16 * PAGE)
  })
  await withReader([uffd, region], async (reader) => {
    const offsets = Array.from({ length: 16 }, (_, page) => (4 + page) * PAGE + 100)
    const { bytes } = await reader.read(region, { offsets })
    t.deepEqual(
      bytes,
      offsets.map((at) => patternByte(at - 100, PAGE, 100)),
    )
    t.is(faults.length, 1)
    t.is(faults[0]?.offset, 4 * PAGE)
    t.is(uffd.stats.bytesMapped, 16 * PAGE)
  })
})

test('readahead is clipped to the region: a copy past its end maps what fits', async (t) => {
  const { uffd, region } = anonymous(4)
  uffd.handle((fault) => {
    t.is(fault.copy(patternPage(fault.offset, PAGE, 8)), PAGE)
  })
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [3 * PAGE] })).bytes, [patternByte(3 * PAGE, PAGE, 0)])
  })
})

test('eexist: a fault resolved by someone else counts EEXIST, maps 0 bytes and does not throw', async (t) => {
  const { uffd, region } = anonymous(4)
  uffd.handle((fault) => {
    uffd.copy(region, fault.offset, patternPage(fault.offset, PAGE, 1, 3))
    t.is(fault.copy(patternPage(fault.offset, PAGE)), 0)
  })
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [PAGE + 1] })).bytes, [patternByte(PAGE, PAGE, 1, 3)])
    t.is(uffd.stats.eexist, 1)
    const again = t.throws(() => uffd.copy(region, PAGE, new Uint8Array(PAGE)))
    t.is((again as { code?: string }).code, 'EEXIST')
  })
})

test('a page two threads fault on while its fault is in flight is dispatched once', async (t) => {
  const { uffd, region } = anonymous(4)
  let dispatched = 0
  const held = gate()
  uffd.handle(async (fault) => {
    dispatched++
    await held.promise
    fault.copy(patternPage(fault.offset, PAGE))
  })
  const readers = [new Reader(), new Reader()]
  const until = (what: string, done: () => boolean) =>
    within(
      (async () => {
        while (!done()) await new Promise((resolve) => setTimeout(resolve, 10))
      })(),
      what,
    )
  try {
    // The second thread faults only once the first one's fault is in flight, however slow the
    // machine is to start a worker; the handler holds it until the second fault was read.
    const first = readers[0]?.read(region, { offsets: [PAGE + 5] })
    await until('the first fault in flight', () => uffd.stats.inFlight >= 1)
    const second = readers[1]?.read(region, { offsets: [PAGE + 5] })
    await until('the second fault read as a duplicate', () => uffd.stats.duplicates >= 1)
    held.open()
    for (const { bytes } of (await Promise.all([first, second])) as Array<{ bytes: number[] }>) {
      t.deepEqual(bytes, [patternByte(PAGE, PAGE, 5)])
    }
    t.is(dispatched, 1)
    t.is(uffd.stats.duplicates, 1)
  } finally {
    held.open()
    await Promise.all(readers.map((reader) => reader.terminate()))
    uffd.close()
    region.close()
  }
})

test('self-fault: the handler thread reading its own memory gets the fallback and an error, never a hang', async (t) => {
  const { uffd, region } = anonymous(4)
  let calls = 0
  uffd.handle((fault) => {
    calls++
    fault.copy(patternPage(fault.offset, PAGE))
  })
  const error = nextError(uffd)
  t.is(new Uint8Array(region.buffer)[PAGE + 9], 0, 'the fallback maps zeros')
  const event = await error
  t.is(event.code, 'ERR_UFFD_SELF_FAULT')
  t.regex(event.message, /handleInWorker/)
  t.is(event.fault?.offset, PAGE)
  t.is(calls, 0)
  t.is(uffd.stats.selfFaults, 1)
  uffd.close()
  region.close()
})

for (const [name, handler, code] of [
  [
    'throws',
    () => {
      throw new Error('boom')
    },
    'ERR_UFFD_HANDLER_THREW',
  ],
  ['rejects', () => Promise.reject(new Error('boom')), 'ERR_UFFD_HANDLER_THREW'],
  ['returns without resolving', () => {}, 'ERR_UFFD_UNRESOLVED'],
] as const) {
  test(`a handler that ${name} gets the fallback (zeros) and an error event`, async (t) => {
    const { uffd, region } = anonymous(2)
    uffd.handle(handler)
    const reader = new Reader()
    try {
      const error = nextError(uffd)
      t.deepEqual((await reader.read(region, { offsets: [PAGE + 2] })).bytes, [0])
      const event = await error
      t.is(event.code, code)
      if (code === 'ERR_UFFD_HANDLER_THREW') t.is((event.cause as Error).message, 'boom')
      t.is(uffd.stats.fallbacks, 1)
    } finally {
      await reader.terminate()
      uffd.close()
      region.close()
    }
  })
}

test('timeoutMs: a handler that never settles gets the fallback after the limit', async (t) => {
  const { uffd, region } = anonymous(2, { timeoutMs: 200 })
  uffd.handle(() => new Promise(() => {}))
  await withReader([uffd, region], async (reader) => {
    const error = nextError(uffd)
    const started = Date.now()
    t.deepEqual((await reader.read(region, { offsets: [3] })).bytes, [0])
    t.true(Date.now() - started >= 150, 'not before the limit')
    t.is((await error).code, 'ERR_UFFD_TIMEOUT')
    t.is(uffd.stats.timeouts, 1)
  })
})

test("fallback 'sigbus': an unresolved fault poisons the page and the faulting thread gets SIGBUS", (t) => {
  const child = spawnSync(process.execPath, [join(__dirname, 'helpers', 'child.js'), 'fallback-sigbus'], {
    timeout: 20_000,
    encoding: 'utf8',
  })
  t.is(child.signal, 'SIGBUS', `stdout: ${child.stdout}\nstderr: ${child.stderr}`)
  t.regex(child.stdout, /handler returned/)
})

test('close() with faults pending wakes every waiting thread', async (t) => {
  const { uffd, region } = anonymous(8, { timeoutMs: 0 })
  uffd.handle(() => new Promise(() => {}))
  const readers = Array.from({ length: 4 }, () => new Reader())
  try {
    const reads = readers.map((reader, i) => reader.read(region, { offsets: [i * 2 * PAGE] }))
    await within(
      (async () => {
        while (uffd.stats.inFlight < 4) await new Promise((resolve) => setTimeout(resolve, 10))
      })(),
      'four faults in flight',
    )
    uffd.close()
    for (const { bytes } of await Promise.all(reads)) t.deepEqual(bytes, [0])
    t.true(uffd.closed)
  } finally {
    await Promise.all(readers.map((reader) => reader.terminate()))
    region.close()
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
  await withReader([uffd], async (reader) => {
    const read = reader.read(region, { offsets: [PAGE + 5] })
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

for (const direct of [true, false]) {
  const how = direct ? 'reading the fd itself' : 'fed by the fault loop thread'
  test(`a handler worker ${how}, terminated mid-fault: its faults get the fallback, and a new worker serves`, async (t) => {
    const { uffd, region } = anonymous(8, { timeoutMs: 0 })
    const errors: string[] = []
    uffd.on('error', (error) => errors.push(error.code))
    const pager = join(__dirname, 'helpers', 'pager.js')
    await uffd.handleInWorker(pager, { workerData: { mode: 'never' }, direct })
    await withReader([uffd, region], async (reader) => {
      const stuck = reader.read(region, { offsets: [PAGE + 5] })
      await within(
        (async () => {
          while (uffd.stats.inFlight < 1) await new Promise((resolve) => setTimeout(resolve, 10))
        })(),
        'a fault in the first worker',
      )
      // A second handleInWorker terminates the first worker, which still holds the fault.
      await uffd.handleInWorker(pager, { workerData: { mode: 'copy' }, direct })
      t.deepEqual((await stuck).bytes, [0], 'the orphaned fault got the fallback')
      t.deepEqual((await reader.read(region, { offsets: [3 * PAGE + 5] })).bytes, [patternByte(3 * PAGE, PAGE, 5)], 'the new worker serves')
      await within(
        (async () => {
          while (!errors.includes('ERR_UFFD_HANDLER_GONE')) await new Promise((resolve) => setTimeout(resolve, 10))
        })(),
        'the handler-gone error',
      )
      t.is(uffd.stats.fallbacks, 1)
    })
  })
}

test('a worker handler that reads the fd itself steps the loop thread aside; the loop takes over when it stops', async (t) => {
  const { uffd, region } = anonymous(8)
  const pager = join(__dirname, 'helpers', 'pager.js')
  await uffd.handleInWorker(pager, { workerData: { mode: 'copy' }, direct: true })
  const view = new Uint8Array(region.buffer)
  t.is(view[PAGE + 5], patternByte(PAGE, PAGE, 5), 'served by the direct reader')
  t.is(uffd.stats.batches, 0, 'nothing went through the loop thread to a callback')
  // The main thread takes the handler back (the worker's generation is removed): the loop thread
  // reads again, and faults of a worker thread reach this handler.
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE, 1, 4))
  })
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [5 * PAGE + 5] })).bytes, [patternByte(5 * PAGE, PAGE, 5, 4)])
    t.true(uffd.stats.batches >= 1)
  })
})

test('a direct reader whose own thread touches registered memory: the loop thread takes its turn, the fallback serves it, ERR_UFFD_SELF_FAULT, no hang', async (t) => {
  const { uffd, region } = anonymous(4)
  // A worker that reads the fd itself, then touches the region on its own thread.
  const worker = new Worker(
    `const { Region, Userfaultfd } = require('userfaultfd'); const { workerData, parentPort } = require('node:worker_threads');
     const uffd = Userfaultfd.attach(workerData.uffd); const region = Region.attach(workerData.region);
     const errors = []; uffd.on('error', (e) => errors.push(e.code));
     uffd.handle((fault) => { fault.copy(new Uint8Array(4096).fill(9)) }, { direct: true });
     setTimeout(() => {
       const byte = new Uint8Array(region.buffer)[5];
       const wait = () => errors.length ? parentPort.postMessage({ byte, errors }) : setTimeout(wait, 10);
       wait();
     }, 50);`,
    { eval: true, workerData: { uffd: uffd.share(), region: region.share() } },
  )
  try {
    const answer = await within(new Promise<{ byte: number; errors: string[] }>((resolve) => worker.once('message', resolve)), 'the worker')
    t.is(answer.byte, 0, 'the fallback (ZEROPAGE) served the reader’s own fault')
    t.deepEqual(answer.errors, ['ERR_UFFD_SELF_FAULT'])
    t.is(uffd.stats.selfFaults, 1)
  } finally {
    await worker.terminate()
    uffd.close()
    region.close()
  }
})

test('a direct handler replaced by another direct handler on the same thread: only the new one is handed faults', async (t) => {
  const { uffd, region } = anonymous(8)
  const first: number[] = []
  const second: number[] = []
  uffd.handle(
    (fault) => {
      first.push(fault.offset)
      fault.copy(patternPage(fault.offset, PAGE, 1, 1))
    },
    { direct: true },
  )
  uffd.handle(
    (fault) => {
      second.push(fault.offset)
      fault.copy(patternPage(fault.offset, PAGE, 1, 2))
    },
    { direct: true },
  )
  await withReader([uffd, region], async (reader) => {
    const offsets = [0, 1, 2, 3, 4, 5].map((page) => page * PAGE + 5)
    const { bytes } = await reader.read(region, { offsets })
    t.deepEqual(
      bytes,
      offsets.map((at) => patternByte(at - 5, PAGE, 5, 2)),
    )
    t.deepEqual(first, [])
    t.is(second.length, 6)
  })
})

test('a native source with a direct reader: its faults are served on the reader’s thread, the handler never sees them', async (t) => {
  const { uffd, region } = anonymous(16)
  uffd.register(region, { source: Source.bytes(patternPage(0, PAGE, 16, 3)) })
  const pager = join(__dirname, 'helpers', 'pager.js')
  await uffd.handleInWorker(pager, { workerData: { mode: 'never' }, direct: true })
  const view = new Uint8Array(region.buffer)
  const read = [0, 7, 15].map((page) => view[page * PAGE + 5])
  t.deepEqual(
    read,
    [0, 7, 15].map((page) => patternByte(page * PAGE, PAGE, 5, 3)),
  )
  t.is(uffd.stats.native, 3)
  t.is(uffd.stats.inFlight, 0)
  uffd.close()
  region.close()
})
