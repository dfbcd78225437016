// The Bun side of the case tables: `Check` on bun:test's expect, `Runtime` a Bun worker (toucher.ts).
import { expect } from 'bun:test'
import type { Check, Expectation, Runtime } from '../cases/check'
import { readInWorker } from './helpers'

/** Runs `assert`, prefixing a failure with `message`, as ava's assertions do. */
function said(message: string | undefined, assert: () => void): void {
  try {
    assert()
  } catch (error) {
    if (message && error instanceof Error) error.message = `${message}\n${error.message}`
    throw error
  }
}

export const bunCheck: Check = {
  is: (actual, expected, message) => said(message, () => expect(actual).toBe(expected)),
  not: (actual, expected, message) => said(message, () => expect(actual).not.toBe(expected)),
  true: (value, message) => said(message, () => expect(value).toBe(true)),
  false: (value, message) => said(message, () => expect(value).toBe(false)),
  deepEqual: (actual, expected, message) => said(message, () => expect(actual).toEqual(expected)),
  regex: (value, pattern, message) => said(message, () => expect(value).toMatch(pattern)),
  throws(fn, expected: Expectation = {}, message) {
    let thrown: unknown
    let threw = false
    try {
      fn()
    } catch (error) {
      thrown = error
      threw = true
    }
    said(message, () => {
      expect(threw).toBe(true)
      const error = thrown as { code?: string; name?: string; message?: string }
      if (expected.instanceOf) expect(thrown).toBeInstanceOf(expected.instanceOf)
      if (expected.code !== undefined) expect(error.code).toBe(expected.code)
      if (expected.name !== undefined) expect(error.name).toBe(expected.name)
      if (expected.message) expect(String(error.message)).toMatch(expected.message)
    })
    return thrown
  },
  log: (message) => console.log(message),
}

export const bunRuntime: Runtime = {
  async touch(region, offsets) {
    const { bytes, worker } = readInWorker(region, offsets)
    try {
      return await bytes
    } finally {
      worker.terminate()
    }
  },
}
