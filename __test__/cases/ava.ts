// The ava side of the case tables: `Check` is ava's own `t`, `Runtime` Node.js (a Toucher worker,
// the compiled helpers, child processes of node).
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import test, { type ExecutionContext } from 'ava'
import { within, withToucher } from '../helpers/harness'
import { runChild } from '../helpers/scenario'
import type { Case, Check, Expectation, Runtime, Table, ViewMessage } from './check'

export function avaCheck(t: ExecutionContext): Check {
  return {
    is: (actual, expected, message) => t.is(actual, expected, message),
    not: (actual, expected, message) => t.not(actual, expected, message),
    true: (value, message) => t.true(value, message),
    false: (value, message) => t.false(value, message),
    deepEqual: (actual, expected, message) => t.deepEqual(actual, expected, message),
    like: (actual, selector, message) => t.like(actual, selector, message),
    regex: (value, pattern, message) => t.regex(value, pattern, message),
    notRegex: (value, pattern, message) => t.notRegex(value, pattern, message),
    throws: (fn, expected, message) => t.throws(fn, expected, message),
    throwsAsync: <E>(promise: Promise<unknown> | (() => Promise<unknown>), expected?: Expectation, message?: string) =>
      (typeof promise === 'function' ? t.throwsAsync(promise, expected, message) : t.throwsAsync(promise, expected, message)) as Promise<
        E | undefined
      >,
    pass: (message) => t.pass(message),
    log: (message) => t.log(message),
    teardown: (fn) => t.teardown(fn),
  }
}

export const nodeRuntime: Runtime = {
  name: 'node',
  async touch(region, offsets, write) {
    let bytes: number[] = []
    await withToucher([], async (toucher) => {
      bytes = (await toucher.read(region, write === undefined ? { offsets } : { offsets, write })).bytes
    })
    return bytes
  },
  viewWorker(shared, pages, close) {
    const worker = new Worker(join(__dirname, '..', 'helpers', 'view-toucher.js'), { workerData: { shared, pages, close } })
    return {
      next: () => within(new Promise<ViewMessage>((resolve) => worker.once('message', resolve)), 'the view worker'),
      go: () => worker.postMessage('go'),
      terminate: () => worker.terminate(),
    }
  },
  helper: (name) => join(__dirname, '..', 'helpers', `${name}.js`),
  child: (scenario, arg, prefix) => runChild(scenario, arg, prefix),
}

/** Registers each case of `cases` as an ava test of this file, and the table's hooks as ava's. */
export function avaCases(cases: Case[] | Table): void {
  const { cases: list, before = [], after = [] } = Array.isArray(cases) ? { cases } : cases
  for (const fn of before) test.before(fn)
  for (const { name, run, skip, serial, timeoutMs } of list) {
    if (skip !== undefined) {
      test.skip(name, () => {})
      continue
    }
    ;(serial ? test.serial : test)(name, async (t) => {
      if (timeoutMs) t.timeout(timeoutMs)
      await run(avaCheck(t), nodeRuntime)
    })
  }
  for (const fn of after) test.after.always(fn)
}
