// Handler workers beside several readers of one userfaultfd (`readers: N`, handleInWorker({ workers })):
// run under Node.js (readers.spec.ts) and Bun (bun/readers.test.ts).
import { Region, Userfaultfd } from 'userfaultfd'
import { patternByte, within } from '../helpers/harness'
import { table } from './check'

const { table: readerCases, define } = table()

export { readerCases }

const PAGE = 4096

define('handleInWorker({ workers }) must be an integer from 1 to 64', async (t, runtime) => {
  const uffd = new Userfaultfd()
  await t.throwsAsync(async () => uffd.handleInWorker(runtime.helper('pager'), { workers: 0 }), { code: 'ERR_OUT_OF_RANGE' })
  await t.throwsAsync(async () => uffd.handleInWorker(runtime.helper('pager'), { workers: 65 }), { code: 'ERR_OUT_OF_RANGE' })
  uffd.close()
})

define(
  'readers: 3 with handlers that read the fd themselves: handleInWorker({ workers: 2 }) serves another thread and this one',
  async (t, runtime) => {
    const uffd = new Userfaultfd({ readers: 3 })
    const region = Region.anonymous(64 * PAGE)
    uffd.register(region)
    try {
      // Every loop thread steps aside for the workers, which read the fd; before, only one did and
      // the start failed after 5 s with ETIMEDOUT.
      const served = await within(
        uffd.handleInWorker(runtime.helper('pager'), { workers: 2, workerData: { mode: 'copy', seed: 9 } }),
        'two workers',
      )
      const offsets = Array.from({ length: 32 }, (_, page) => page * PAGE + 5)
      t.deepEqual(
        await runtime.touch(region, offsets),
        offsets.map((offset) => patternByte(offset - 5, PAGE, 5, 9)),
      )
      // The other half on this thread: its faults go to the workers, never to itself.
      const view = new Uint8Array(region.buffer)
      const mine = Array.from({ length: 32 }, (_, page) => (32 + page) * PAGE + 5)
      t.deepEqual(
        mine.map((offset) => view[offset]),
        mine.map((offset) => patternByte(offset - 5, PAGE, 5, 9)),
      )
      t.is(uffd.stats.selfFaults, 0)
      served.off()
    } finally {
      uffd.close()
      region.close()
    }
  },
)

define('a workers: 2 group that fails to start leaves the serving handler serving', async (t, runtime) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(16 * PAGE)
  uffd.register(region)
  const errors: string[] = []
  uffd.on('error', (error) => errors.push(String(error.code)))
  try {
    await within(uffd.handleInWorker(runtime.helper('pager'), { workerData: { mode: 'copy', seed: 1 } }), 'the serving worker')
    t.deepEqual(await runtime.touch(region, [5]), [patternByte(0, PAGE, 5, 1)])
    // A group whose modules cannot load: the call rejects, and nothing of the group replaced the old one.
    const broken = `data:text/javascript,${encodeURIComponent('throw new Error("no pager here")')}`
    await t.throwsAsync(within(uffd.handleInWorker(broken, { workers: 2 }), 'the broken group'), { code: 'ERR_UFFD_WORKER' })
    t.deepEqual(await runtime.touch(region, [PAGE + 5]), [patternByte(PAGE, PAGE, 5, 1)], 'the old handler serves on')
    t.deepEqual(errors, [])
  } finally {
    uffd.close()
    region.close()
  }
})
