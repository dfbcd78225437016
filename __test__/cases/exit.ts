// A process ends when its script does: a forgotten close(), process.exit() and the end of a script
// never wait for a fault nothing serves. Each scenario runs in a process of its own
// (helpers/scenario-child.ts) of the runtime under test. Run under Node.js (exit.spec.ts) and Bun
// (bun/exit.test.ts).
import { patternByte } from '../helpers/harness'
import { table } from './check'

const { table: exitCases, define } = table()

export { exitCases }

const PAGE = 4096

define('a script that uses handleInWorker and forgets close() ends by itself', (t, runtime) => {
  const run = runtime.child('forget-close-worker')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ byte: patternByte(PAGE, PAGE, 5) }])
  t.true(run.ms < 20_000, `ended after ${run.ms} ms`)
})

define('a script whose thread reads the fd itself (direct) and forgets close() ends by itself', (t, runtime) => {
  const run = runtime.child('forget-close-direct')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ byte: patternByte(PAGE, PAGE, 5) }])
  t.true(run.ms < 20_000, `ended after ${run.ms} ms`)
})

define('process.exit() returns promptly while a worker sleeps in a fault nothing serves (timeoutMs: 0)', (t, runtime) => {
  const run = runtime.child('exit-with-fault')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ inFlight: 1 }])
  t.true(run.ms < 20_000, `exited after ${run.ms} ms`)
})

define('the end of a script returns promptly while an unref’d worker sleeps in a fault nothing serves', (t, runtime) => {
  const run = runtime.child('end-with-fault')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ inFlight: 1 }])
  t.true(run.ms < 20_000, `ended after ${run.ms} ms`)
})
