// One case table, run under Node.js (ava) and Bun (bun:test): a case is written against `Check`,
// the few assertions both runners have, and `Runtime`, what differs between them (how another
// thread touches memory, which file a worker or a child process loads). __test__/cases/ava.ts and
// __test__/bun/cases.ts map them to each runner; a subject's spec file and its Bun test file each
// register the subject's table with one call.
import type { Region, SharedRegion } from 'userfaultfd'

/** What a thrown error must be: its class, its code, its name, its message. */
export interface Expectation {
  instanceOf?: abstract new (...args: never[]) => unknown
  code?: string
  name?: string
  message?: RegExp | string
}

/** The assertions a case may use (ava's names and meanings); each runner's adapter implements them. */
export interface Check {
  is(actual: unknown, expected: unknown, message?: string): void
  not(actual: unknown, expected: unknown, message?: string): void
  true(value: unknown, message?: string): void
  false(value: unknown, message?: string): void
  deepEqual(actual: unknown, expected: unknown, message?: string): void
  /** Every field of `selector` is in `actual`, equal (ava's t.like). */
  like(actual: unknown, selector: Record<string, unknown>, message?: string): void
  regex(value: string, pattern: RegExp, message?: string): void
  notRegex(value: string, pattern: RegExp, message?: string): void
  /** Asserts that `fn` throws what `expected` says, and returns what it threw. */
  throws(fn: () => unknown, expected?: Expectation, message?: string): unknown
  /** Asserts that `promise` (or what `fn` returns) rejects as `expected` says, and returns what it rejected with. */
  throwsAsync<E = unknown>(
    promise: Promise<unknown> | (() => Promise<unknown>),
    expected?: Expectation,
    message?: string,
  ): Promise<E | undefined>
  pass(message?: string): void
  log(message: string): void
  /** Runs `fn` after the case, whether it passed or failed (the last registered first). */
  teardown(fn: () => unknown): void
}

/** How a child process of the scenario child (helpers/scenario-child.ts) ran. */
export interface ChildRun {
  status: number | null
  signal: NodeJS.Signals | null
  ms: number
  /** The JSON lines it printed. */
  lines: Array<Record<string, unknown>>
  stderr: string
}

/** What a view worker says: it read half the pages; then what it read of every page, and whether its view is closed. */
export interface ViewMessage {
  half?: boolean
  seen?: number[]
  closed?: boolean
}

/** A worker of the runtime that attached a region (Runtime.viewWorker). */
export interface ViewWorker {
  /** Its next message, within a time limit. */
  next(): Promise<ViewMessage>
  /** Tells it to read the rest. */
  go(): void
  terminate(): Promise<unknown>
}

/** What the runtime under test provides. */
export interface Runtime {
  name: 'node' | 'bun'
  /**
   * Reads the bytes at `offsets` of `region` in another thread (a worker of the runtime): its faults.
   * With `write`, writes that byte at each offset first (write faults), then reads it back.
   */
  touch(region: Region, offsets: number[], write?: number): Promise<number[]>
  /**
   * A worker that attaches `shared` and reads the first byte of each of its `pages` pages: half, then
   * (told to go) the rest; then closes its view, or with `close` false keeps it open until terminated.
   */
  viewWorker(shared: SharedRegion, pages: number, close: boolean): ViewWorker
  /** The path of a module of __test__/helpers as this runtime loads it (the compiled .js under ava, the .ts under Bun). */
  helper(name: string): string
  /** Runs a scenario of helpers/scenario-child in a process of this runtime (node or bun), after `prefix` (setpriv ...) if given. */
  child(scenario: string, arg?: string, prefix?: string[]): ChildRun
}

export interface Case {
  name: string
  run(t: Check, runtime: Runtime): void | Promise<void>
  /** Why the case cannot run here: it is then registered as skipped, with the reason in its name. */
  skip?: string
  /** Run alone (ava's test.serial; Bun runs a file's tests one after another anyway). */
  serial?: boolean
  /** A time limit for the case, in milliseconds, where the runner's default is too short. */
  timeoutMs?: number
}

/** A subject's cases, and what runs once before and after all of them (a server they share). */
export interface Table {
  cases: Case[]
  before: Array<() => unknown>
  after: Array<() => unknown>
}

type Body = Case['run']

/** What a case file fills its table with: ava's shape (`test`, `test.serial`, `test.skip`, `test.before`, `test.after`). */
export interface Define {
  (name: string, run: Body, options?: Pick<Case, 'timeoutMs'>): void
  serial(name: string, run: Body, options?: Pick<Case, 'timeoutMs'>): void
  /** Registered as skipped, the reason in its name. */
  skip(name: string, run: Body): void
  before(fn: () => unknown): void
  after(fn: () => unknown): void
}

/** A new table, and the `define` that fills it. */
export function table(): { table: Table; define: Define } {
  const made: Table = { cases: [], before: [], after: [] }
  const define = ((name, run, options) => void made.cases.push({ name, run, ...options })) as Define
  define.serial = (name, run, options) => void made.cases.push({ name, run, serial: true, ...options })
  define.skip = (name, run) => void made.cases.push({ name, run, skip: name })
  define.before = (fn) => void made.before.push(fn)
  define.after = (fn) => void made.after.push(fn)
  return { table: made, define }
}

/** A table of `cases` alone, with nothing before or after them. */
export const only = (cases: Case[]): Table => ({ cases, before: [], after: [] })
