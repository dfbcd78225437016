// What a new user meets first (issue 17), under Bun: the errors the native binding throws for a
// number out of its bounds are the same RangeError ERR_OUT_OF_RANGE as under Node.js (napi's
// range error, which each runtime makes itself), and a wrong type the same TypeError.
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Region, UffdError, Userfaultfd } from 'userfaultfd'

const PAGE = 4096

function thrown(fn: () => unknown): Error & { code?: string } {
  try {
    fn()
  } catch (error) {
    return error as Error & { code?: string }
  }
  throw new Error('expected a throw')
}

describe('bad sizes under Bun', () => {
  test('negative, zero and too-large sizes and offsets are one kind of error, naming the argument and the bound', () => {
    for (const make of [() => Region.anonymous(0), () => Region.anonymous(-1), () => Region.anonymous(2 ** 52)]) {
      const error = thrown(make)
      expect(error).toBeInstanceOf(RangeError)
      expect(error.code).toBe('ERR_OUT_OF_RANGE')
      expect(error.message).toMatch(/"size"/)
    }
    const uffd = new Userfaultfd()
    const region = Region.anonymous(PAGE)
    const past = thrown(() => uffd.register(region, { offset: 2 * PAGE }))
    expect(past).toBeInstanceOf(RangeError)
    expect(past.code).toBe('ERR_OUT_OF_RANGE')
    expect(past.message).toMatch(/offset 8192 is past the end of the region \(4096 bytes\)/)
    const empty = thrown(() => uffd.register(region, { length: 0 }))
    expect(empty).toBeInstanceOf(RangeError)
    expect(empty.code).toBe('ERR_OUT_OF_RANGE')
    const wrong = thrown(() => uffd.register(region, { length: '1' as unknown as number }))
    expect(wrong).toBeInstanceOf(TypeError)
    expect(wrong.code).toBe('ERR_INVALID_ARG_TYPE')
    const misaligned = thrown(() => uffd.register(region, { offset: 100 }))
    expect(misaligned).toBeInstanceOf(UffdError)
    expect(misaligned.code).toBe('EINVAL')
    uffd.close()
    region.close()
  })
})

// Bun loads modules its own way (CommonJS and ES modules alike, TypeScript too): the handler
// exports the README documents must serve under it as under Node.js.
const fill = (seed: number) => `fault.copy(new Uint8Array(fault.region.pageSize).fill(fault.offset / fault.region.pageSize + ${seed}))`
const modules: Array<[string, string, number]> = [
  ['named.mjs', `export function handler(fault) { ${fill(21)} }`, 21],
  ['default.cjs', `module.exports = function (fault) { ${fill(22)} }`, 22],
  ['named.cjs', `exports.handler = function (fault) { ${fill(23)} }`, 23],
  ['object.cjs', `module.exports = { handler(fault) { ${fill(24)} } }`, 24],
  ['built.cjs', `const api = {}; api.handler = function (fault) { ${fill(26)} }; module.exports = api`, 26],
  [
    'named.ts',
    `export function handler(fault: { copy(b: Uint8Array): number; offset: number; region: { pageSize: number } }): void { ${fill(25)} }`,
    25,
  ],
]

describe('handler modules under Bun', () => {
  for (const [name, source, seed] of modules) {
    test(`handleInWorker serves with ${name}`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'uffd-bun-handler-'))
      writeFileSync(join(dir, name), source)
      const uffd = new Userfaultfd()
      const region = Region.anonymous(2 * PAGE)
      uffd.register(region)
      try {
        const served = await uffd.handleInWorker(join(dir, name))
        const bytes = new Uint8Array(region.buffer)
        expect([bytes[0], bytes[PAGE + 7]]).toEqual([seed, seed + 1])
        served.off()
      } finally {
        uffd.close()
        region.close()
        rmSync(dir, { recursive: true, force: true })
      }
    }, 20_000)
  }
})
