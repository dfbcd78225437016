// A userfaultfd's end: close() with faults pending wakes every thread asleep in one. Run under
// Node.js (lifecycle.spec.ts) and Bun (bun/lifecycle.test.ts).
import { anonymous, within } from '../helpers/harness'
import { table } from './check'

const { table: lifecycleCases, define } = table()

export { lifecycleCases }

const PAGE = 4096

define('close() with faults pending wakes every waiting thread', async (t, runtime) => {
  const { uffd, region } = anonymous(8, { timeoutMs: 0 })
  uffd.handle(() => new Promise(() => {}))
  try {
    const reads = [0, 1, 2, 3].map((i) => runtime.touch(region, [i * 2 * PAGE]))
    await within(
      (async () => {
        while (uffd.stats.inFlight < 4) await new Promise((resolve) => setTimeout(resolve, 10))
      })(),
      'four faults in flight',
    )
    uffd.close()
    for (const bytes of await Promise.all(reads)) t.deepEqual(bytes, [0])
    t.true(uffd.closed)
  } finally {
    uffd.close()
    region.close()
  }
})
