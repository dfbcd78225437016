// The Bun side of the case tables: `Check` on bun:test's expect, `Runtime` Bun (a Bun worker,
// toucher.ts; the helpers' TypeScript as it is; child processes of bun).
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { join } from 'node:path'
import type { Case, Check, ChildRun, Expectation, Runtime, Table, ViewMessage } from '../cases/check'
import { readInWorker, within } from './helpers'

/** Runs `assert`, prefixing a failure with `message`, as ava's assertions do. */
function said(message: string | undefined, assert: () => void): void {
  try {
    assert()
  } catch (error) {
    if (message && error instanceof Error) error.message = `${message}\n${error.message}`
    throw error
  }
}

function matches(thrown: unknown, expected: Expectation): void {
  const error = thrown as { code?: string; name?: string; message?: string }
  if (expected.instanceOf) expect(thrown).toBeInstanceOf(expected.instanceOf)
  if (expected.code !== undefined) expect(error.code).toBe(expected.code)
  if (expected.name !== undefined) expect(error.name).toBe(expected.name)
  if (typeof expected.message === 'string') expect(String(error.message)).toBe(expected.message)
  else if (expected.message) expect(String(error.message)).toMatch(expected.message)
}

/** Asserts that a call threw (`didThrow`) what `expected` says; gives what it threw. */
function threw(thrown: unknown, expected: Expectation, message: string | undefined, didThrow = true): unknown {
  said(message, () => {
    expect(didThrow).toBe(true)
    matches(thrown, expected)
  })
  return thrown
}

/** A `Check` for one test; `teardowns` collects what its teardown() registers. */
export function bunCheck(teardowns: Array<() => unknown> = []): Check {
  return {
    is: (actual, expected, message) => said(message, () => expect(actual).toBe(expected)),
    not: (actual, expected, message) => said(message, () => expect(actual).not.toBe(expected)),
    true: (value, message) => said(message, () => expect(value).toBe(true)),
    false: (value, message) => said(message, () => expect(value).toBe(false)),
    deepEqual: (actual, expected, message) => said(message, () => expect(actual).toEqual(expected)),
    like: (actual, selector, message) => said(message, () => expect(actual).toMatchObject(selector)),
    regex: (value, pattern, message) => said(message, () => expect(value).toMatch(pattern)),
    notRegex: (value, pattern, message) => said(message, () => expect(value).not.toMatch(pattern)),
    throws(fn, expected: Expectation = {}, message) {
      try {
        fn()
      } catch (error) {
        return threw(error, expected, message)
      }
      return threw(undefined, expected, message, false)
    },
    async throwsAsync<E>(promise: Promise<unknown> | (() => Promise<unknown>), expected: Expectation = {}, message?: string) {
      try {
        await (typeof promise === 'function' ? promise() : promise)
      } catch (error) {
        return threw(error, expected, message) as E | undefined
      }
      return threw(undefined, expected, message, false) as E | undefined
    },
    pass: () => {},
    log: (message) => console.log(message),
    teardown: (fn) => void teardowns.push(fn),
  }
}

const child = join(__dirname, '..', 'helpers', 'scenario-child.ts')

export const bunRuntime: Runtime = {
  name: 'bun',
  async touch(region, offsets, write) {
    const { bytes, worker } = readInWorker(region, offsets, write)
    try {
      return await bytes
    } finally {
      worker.terminate()
    }
  },
  viewWorker(shared, pages, close) {
    const worker = new Worker(new URL('./view-toucher.ts', import.meta.url).href)
    const queue: ViewMessage[] = []
    let waiting: ((message: ViewMessage) => void) | undefined
    worker.onmessage = (event) => {
      if (waiting) {
        waiting(event.data)
        waiting = undefined
      } else queue.push(event.data)
    }
    worker.postMessage({ shared, pages, close })
    return {
      next: () =>
        within(
          new Promise<ViewMessage>((resolve) => {
            const queued = queue.shift()
            if (queued) resolve(queued)
            else waiting = resolve
          }),
          'the view worker',
        ),
      go: () => worker.postMessage({ pages }),
      terminate: async () => worker.terminate(),
    }
  },
  helper: (name) => join(__dirname, '..', 'helpers', `${name}.ts`),
  child(scenario, arg, prefix = []): ChildRun {
    const started = Date.now()
    const result = Bun.spawnSync([...prefix, process.execPath, child, scenario, ...(arg ? [arg] : [])], {
      timeout: 60_000,
      cwd: join(__dirname, '..', '..'),
    })
    const lines = result.stdout
      .toString()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
    return {
      status: result.exitCode,
      signal: (result.signalCode ?? null) as NodeJS.Signals | null,
      ms: Date.now() - started,
      lines,
      stderr: result.stderr.toString(),
    }
  },
}

/** A case's time limit unless it says otherwise: ava's (package.json), where bun:test's own 5 s is too short for a case that starts servers or workers on a busy machine. */
const LIMIT_MS = 120_000

/** Registers each case of `cases` as a Bun test of this file, and the table's hooks as Bun's. */
export function bunCases(cases: Case[] | Table): void {
  const { cases: list, before = [], after = [] } = Array.isArray(cases) ? { cases } : cases
  for (const fn of before) beforeAll(fn, 120_000)
  for (const { name, run, skip, timeoutMs } of list) {
    test.skipIf(skip !== undefined)(
      name,
      async () => {
        const teardowns: Array<() => unknown> = []
        try {
          await run(bunCheck(teardowns), bunRuntime)
        } finally {
          for (const fn of teardowns.reverse()) await fn()
        }
      },
      timeoutMs ?? LIMIT_MS,
    )
  }
  for (const fn of after) afterAll(fn)
}
