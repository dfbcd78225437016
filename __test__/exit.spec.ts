// A process ends when its script does: a forgotten close(), process.exit() and the end of a script
// never wait for a fault nothing serves. Each scenario runs in its own process (scenario-child.ts).
import test from 'ava'
import { patternByte } from './helpers/harness'
import { runChild } from './helpers/scenario'

const PAGE = 4096

test('a script that uses handleInWorker and forgets close() ends by itself', (t) => {
  const run = runChild('forget-close-worker')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ byte: patternByte(PAGE, PAGE, 5) }])
  t.true(run.ms < 20_000, `ended after ${run.ms} ms`)
})

test('a script whose thread reads the fd itself (direct) and forgets close() ends by itself', (t) => {
  const run = runChild('forget-close-direct')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ byte: patternByte(PAGE, PAGE, 5) }])
  t.true(run.ms < 20_000, `ended after ${run.ms} ms`)
})

test('process.exit() returns promptly while a worker sleeps in a fault nothing serves (timeoutMs: 0)', (t) => {
  const run = runChild('exit-with-fault')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ inFlight: 1 }])
  t.true(run.ms < 20_000, `exited after ${run.ms} ms`)
})

test('the end of a script returns promptly while an unref’d worker sleeps in a fault nothing serves', (t) => {
  const run = runChild('end-with-fault')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ inFlight: 1 }])
  t.true(run.ms < 20_000, `ended after ${run.ms} ms`)
})
