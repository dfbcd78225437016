// One case table, run under Node.js (ava) and Bun (bun:test): a case is written against `Check`,
// the few assertions both runners have, and `Runtime`, what differs between them (how another
// thread touches memory). __test__/cases/ava.ts and __test__/bun/cases.ts map them to each runner.
import type { Region } from 'userfaultfd'

/** What a thrown error must be: its class, its code, its name, its message. */
export interface Expectation {
  instanceOf?: abstract new (...args: never[]) => unknown
  code?: string
  name?: string
  message?: RegExp
}

/** The assertions a case may use; each runner's adapter implements them. */
export interface Check {
  is(actual: unknown, expected: unknown, message?: string): void
  not(actual: unknown, expected: unknown, message?: string): void
  true(value: unknown, message?: string): void
  false(value: unknown, message?: string): void
  deepEqual(actual: unknown, expected: unknown, message?: string): void
  regex(value: string, pattern: RegExp, message?: string): void
  /** Asserts that `fn` throws what `expected` says, and returns what it threw. */
  throws(fn: () => unknown, expected?: Expectation, message?: string): unknown
  log(message: string): void
}

/** What the runtime under test provides. */
export interface Runtime {
  /** Reads the bytes at `offsets` of `region` in another thread (a worker of the runtime): its faults. */
  touch(region: Region, offsets: number[]): Promise<number[]>
}

export interface Case {
  name: string
  run(t: Check, runtime: Runtime): void | Promise<void>
}
