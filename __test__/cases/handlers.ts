// JavaScript handlers on the fault path: a fault with no handler waits for one and says so, handle()
// returns what removes it, a page faulted twice is dispatched once, a handler that fails or faults
// on its own memory gets the fallback and an error, direct readers. Run under Node.js
// (handlers.spec.ts) and Bun (bun/handlers.test.ts).
import { Worker } from 'node:worker_threads'
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { anonymous, gate, nextError, patternByte, patternPage, within } from '../helpers/harness'
import { table } from './check'

const { table: handlerCases, define } = table()

export { handlerCases }

const PAGE = 4096

/** Whether `promise` settles within `ms` (false: the thread that touched is still asleep in a fault). */
export async function answersWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const timeout = new Promise<false>((resolve) => setTimeout(() => resolve(false), ms))
  return Promise.race([promise.then(() => true), timeout])
}

define('a fault with no handler emits ERR_UFFD_NO_HANDLER at once; a handler installed later serves it', async (t, runtime) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  try {
    const error = nextError(uffd, 5_000)
    const read = runtime.touch(region, [PAGE + 1])
    const said = await error
    t.is(said.code, 'ERR_UFFD_NO_HANDLER')
    t.regex(said.message, /handleInWorker/)
    t.is(said.fault?.offset, PAGE)
    uffd.handle((fault) => void fault.copy(patternPage(fault.offset, PAGE)))
    t.deepEqual(await read, [patternByte(PAGE, PAGE, 1)], 'the waiting fault reached the new handler')
  } finally {
    uffd.close()
    region.close()
  }
})

define(
  'the thread that would install the handler touches registered memory with none: the fallback comes at once, not after timeoutMs',
  (t, runtime) => {
    const run = runtime.child('owner-no-handler')
    t.is(run.status, 0, run.stderr)
    t.is(run.lines[0]?.byte, 0)
    t.true((run.lines[0]?.ms as number) < 5_000, `the read took ${run.lines[0]?.ms} ms`)
    t.deepEqual(run.lines[1], { codes: ['ERR_UFFD_NO_HANDLER'], fallbacks: 1 })
  },
)

define(
  'a thread that faults with no handler, then closes at once: the ERR_UFFD_NO_HANDLER is heard before close() returns',
  (t, runtime) => {
    const run = runtime.child('owner-no-handler-then-close')
    t.is(run.status, 0, run.stderr)
    t.deepEqual(run.lines, [{ byte: 0, codes: ['ERR_UFFD_NO_HANDLER'] }])
  },
)

define(
  'a thread that faults with no handler, then ends the script with nothing listening: the warning is printed on the way out',
  (t, runtime) => {
    const run = runtime.child('owner-no-handler-then-end')
    t.is(run.status, 0, run.stderr)
    t.deepEqual(run.lines, [{ byte: 0, codes: [] }])
    t.regex(run.stderr, /ERR_UFFD_NO_HANDLER/)
  },
)

define(
  'handle() returns what removes the handler: after off(), a fault waits for the next handler (ERR_UFFD_NO_HANDLER) and it serves it',
  async (t, runtime) => {
    const { uffd, region } = anonymous(4)
    const first: number[] = []
    const served = uffd.handle((fault) => {
      first.push(fault.offset)
      fault.copy(patternPage(fault.offset, PAGE, 1, 1))
    })
    try {
      t.deepEqual(await runtime.touch(region, [5]), [patternByte(0, PAGE, 5, 1)])
      served.off()
      served.off() // a second off() is nothing
      const noHandler = nextError(uffd)
      const read = runtime.touch(region, [2 * PAGE + 5])
      t.is((await noHandler).code, 'ERR_UFFD_NO_HANDLER')
      t.false(await answersWithin(read, 100), 'the fault waits for a handler')
      uffd.handle((fault) => {
        fault.copy(patternPage(fault.offset, PAGE, 1, 2))
      })
      t.deepEqual(await read, [patternByte(2 * PAGE, PAGE, 5, 2)])
      t.deepEqual(first, [0], 'the removed handler saw no fault after off()')
    } finally {
      uffd.close()
      region.close()
    }
  },
)

define(
  'using removes a handle() handler at the end of the block; off() of a replaced handler leaves its successor be',
  async (t, runtime) => {
    const { uffd, region } = anonymous(4)
    const seen: string[] = []
    const outer = uffd.handle(() => {
      seen.push('outer')
    })
    {
      using _inner = uffd.handle((fault) => {
        seen.push('inner')
        fault.copy(patternPage(fault.offset, PAGE))
      })
      outer.off() // replaced already: nothing
      t.deepEqual(await runtime.touch(region, [PAGE + 5]), [patternByte(PAGE, PAGE, 5)])
    }
    t.deepEqual(seen, ['inner'])
    t.is(uffd.stats.queued, 0)
    try {
      const noHandler = nextError(uffd)
      const read = runtime.touch(region, [3 * PAGE])
      t.is((await noHandler).code, 'ERR_UFFD_NO_HANDLER', 'the block removed its handler')
      uffd.handle((fault) => {
        fault.zero()
      })
      t.deepEqual(await read, [0])
    } finally {
      uffd.close()
      region.close()
    }
  },
)

define('a page two threads fault on while its fault is in flight is dispatched once', async (t, runtime) => {
  const { uffd, region } = anonymous(4)
  let dispatched = 0
  const held = gate()
  uffd.handle(async (fault) => {
    dispatched++
    await held.promise
    fault.copy(patternPage(fault.offset, PAGE))
  })
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
    const first = runtime.touch(region, [PAGE + 5])
    await until('the first fault in flight', () => uffd.stats.inFlight >= 1)
    const second = runtime.touch(region, [PAGE + 5])
    await until('the second fault read as a duplicate', () => uffd.stats.duplicates >= 1)
    held.open()
    for (const bytes of await Promise.all([first, second])) t.deepEqual(bytes, [patternByte(PAGE, PAGE, 5)])
    t.is(dispatched, 1)
    t.is(uffd.stats.duplicates, 1)
  } finally {
    held.open()
    uffd.close()
    region.close()
  }
})

define('self-fault: the handler thread reading its own memory gets the fallback and an error, never a hang', async (t) => {
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
  define(`a handler that ${name} gets the fallback (zeros) and an error event`, async (t, runtime) => {
    const { uffd, region } = anonymous(2)
    uffd.handle(handler)
    try {
      const error = nextError(uffd)
      t.deepEqual(await runtime.touch(region, [PAGE + 2]), [0])
      const event = await error
      t.is(event.code, code)
      if (code === 'ERR_UFFD_HANDLER_THREW') t.is((event.cause as Error).message, 'boom')
      t.is(uffd.stats.fallbacks, 1)
    } finally {
      uffd.close()
      region.close()
    }
  })
}

define('a worker handler that reads the fd itself steps the loop thread aside; the loop takes over when it stops', async (t, runtime) => {
  const { uffd, region } = anonymous(8)
  await uffd.handleInWorker(runtime.helper('pager'), { workerData: { mode: 'copy' }, direct: true })
  const view = new Uint8Array(region.buffer)
  t.is(view[PAGE + 5], patternByte(PAGE, PAGE, 5), 'served by the direct reader')
  t.is(uffd.stats.batches, 0, 'nothing went through the loop thread to a callback')
  // The main thread takes the handler back (the worker's generation is removed): the loop thread
  // reads again, and faults of a worker thread reach this handler.
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE, 1, 4))
  })
  try {
    t.deepEqual(await runtime.touch(region, [5 * PAGE + 5]), [patternByte(5 * PAGE, PAGE, 5, 4)])
    t.true(uffd.stats.batches >= 1)
  } finally {
    uffd.close()
    region.close()
  }
})

define(
  'a direct reader whose own thread touches registered memory: the loop thread takes its turn, the fallback serves it, ERR_UFFD_SELF_FAULT, no hang',
  async (t) => {
    const { uffd, region } = anonymous(4)
    // A worker (node:worker_threads, which Bun has too) that reads the fd itself, then touches the region on its own thread.
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
      const answer = await within(
        new Promise<{ byte: number; errors: string[] }>((resolve) => worker.once('message', resolve)),
        'the worker',
      )
      t.is(answer.byte, 0, 'the fallback (ZEROPAGE) served the reader’s own fault')
      t.deepEqual(answer.errors, ['ERR_UFFD_SELF_FAULT'])
      t.is(uffd.stats.selfFaults, 1)
    } finally {
      await worker.terminate()
      uffd.close()
      region.close()
    }
  },
)

define('a direct handler replaced by another direct handler on the same thread: only the new one is handed faults', async (t, runtime) => {
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
  try {
    const offsets = [0, 1, 2, 3, 4, 5].map((page) => page * PAGE + 5)
    const bytes = await runtime.touch(region, offsets)
    t.deepEqual(
      bytes,
      offsets.map((at) => patternByte(at - 5, PAGE, 5, 2)),
    )
    t.deepEqual(first, [])
    t.is(second.length, 6)
  } finally {
    uffd.close()
    region.close()
  }
})

define(
  'a native source with a direct reader: its faults are served on the reader’s thread, the handler never sees them',
  async (t, runtime) => {
    const { uffd, region } = anonymous(16)
    uffd.register(region, { source: Source.bytes(patternPage(0, PAGE, 16, 3)) })
    await uffd.handleInWorker(runtime.helper('pager'), { workerData: { mode: 'never' }, direct: true })
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
  },
)
