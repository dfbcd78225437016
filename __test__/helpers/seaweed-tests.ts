// How a test file that needs SeaweedFS runs its tests: one at a time (they share one store), and,
// without weed, skipped with a warning, or failed under CI (where .ci/run installs it).
import test from 'ava'
import { weedBinary } from './seaweed'

export function seaweedTests(what: string): { weedPath: string | undefined; run: typeof test.serial | typeof test.serial.skip } {
  const { path, why } = weedBinary()
  if (!path) {
    if (process.env.CI) test(`SeaweedFS is installed for the ${what} tests`, (t) => t.fail(why))
    else console.warn(`${what} tests skipped: ${why}`)
  }
  return { weedPath: path, run: path ? test.serial : test.serial.skip }
}
