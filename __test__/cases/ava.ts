// The ava side of the case tables: `Check` is ava's own `t`, `Runtime` a Toucher worker.
import type { ExecutionContext } from 'ava'
import { withToucher } from '../helpers/harness'
import type { Check, Runtime } from './check'

export function avaCheck(t: ExecutionContext): Check {
  return {
    is: (actual, expected, message) => t.is(actual, expected, message),
    not: (actual, expected, message) => t.not(actual, expected, message),
    true: (value, message) => t.true(value, message),
    false: (value, message) => t.false(value, message),
    deepEqual: (actual, expected, message) => t.deepEqual(actual, expected, message),
    regex: (value, pattern, message) => t.regex(value, pattern, message),
    throws: (fn, expected, message) => t.throws(fn, expected, message),
    log: (message) => t.log(message),
  }
}

export const nodeRuntime: Runtime = {
  async touch(region, offsets) {
    let bytes: number[] = []
    await withToucher([], async (toucher) => {
      bytes = (await toucher.read(region, { offsets })).bytes
    })
    return bytes
  },
}
