// What a new user meets first (issue 17), under Bun: the errors the native binding throws for a
// number out of its bounds are the same RangeError ERR_OUT_OF_RANGE as under Node.js (napi's
// range error, which each runtime makes itself), and a wrong type the same TypeError.
import { describe, expect, test } from 'bun:test'
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
