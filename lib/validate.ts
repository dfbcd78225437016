// Checks of public arguments, the way Node checks its own: a value of the wrong type is a
// TypeError (ERR_INVALID_ARG_TYPE); a number that is no integer, negative, or past its bound is a
// RangeError (ERR_OUT_OF_RANGE). The bounds that depend on a region (its size, its page size) are
// checked in the core, which throws the same RangeError for a size of 0 or an offset past the end,
// and a UffdError EINVAL for what is not a multiple of the page size.
import { argumentError, rangeError, unknownOptionError } from './errors'

/** A count, size, offset or id: an integer from `min` (default 0) to 2^53 - 1. */
export function integer(name: string, value: unknown, min = 0): number {
  if (typeof value !== 'number') throw argumentError(name, 'of type number', value)
  if (!Number.isInteger(value) || value < min || value > Number.MAX_SAFE_INTEGER) {
    throw rangeError(name, `an integer >= ${min} && <= ${Number.MAX_SAFE_INTEGER}`, value)
  }
  return value
}

/**
 * The most bytes a region can span: a process's address space with the kernel's default layout
 * (47 bits on x64, 48 on arm64), as `MAX_MAPPING_BYTES` of uffd-core's region.rs says. A size
 * within it that the machine cannot map is a UffdError ENOMEM, not an argument out of range.
 */
export const MAX_REGION_BYTES: number = process.arch === 'x64' ? 2 ** 47 : process.arch === 'arm64' ? 2 ** 48 : Number.MAX_SAFE_INTEGER

/** The size of a new region: an integer from 1 to {@link MAX_REGION_BYTES}. */
export function regionSize(name: string, value: unknown): number {
  if (typeof value !== 'number') throw argumentError(name, 'of type number', value)
  if (!Number.isInteger(value) || value < 1 || value > MAX_REGION_BYTES) {
    throw rangeError(name, `an integer >= 1 && <= ${MAX_REGION_BYTES} (a process's address space)`, value)
  }
  return value
}

/** A size left out (`undefined`), or a whole number of 4096-byte pages: a chunk or frame of an object. */
export function optionalPages(name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined
  const size = integer(name, value, 4096)
  if (size % 4096 !== 0) throw rangeError(name, 'a multiple of 4096', size)
  return size
}

export function optionalInteger(name: string, value: unknown): number | undefined {
  return value === undefined ? undefined : integer(name, value)
}

export function optionalBoolean(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw argumentError(name, 'a boolean', value)
  return value
}

export function options<T extends object>(name: string, value: T | undefined): Partial<T> {
  if (value === undefined) return {}
  if (typeof value !== 'object' || value === null) throw argumentError(name, 'an object', value)
  return value
}

/**
 * Refuses a key of `value` (the options at `name`) that `known` does not list: a misspelt option
 * of a store (`blobEndpoint`, `chunksize`) would otherwise be left out without a word, and its
 * default used. The error names the nearest known key.
 */
export function knownKeys(name: string, value: object, known: Readonly<Record<string, true>>, where: string): void {
  for (const key of Object.keys(value)) {
    if (Object.hasOwn(known, key)) continue
    throw unknownOptionError(`${name}.${key}`, where, nearest(key, Object.keys(known)))
  }
}

/**
 * A command line's parse error (`parseArgs`'s) in its words: an unknown flag names the nearest
 * of those its `usage` text lists, as a misspelt option of the API does.
 * @internal
 */
export function commandLineParseError(error: { code?: string; message: string }, usage: string): string {
  const unknown = error.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? /Unknown option '([^']+)'/.exec(error.message)?.[1] : undefined
  if (unknown === undefined) return error.message
  const flags = [...new Set([...usage.matchAll(/--([a-z][a-z0-9-]*)/g)].map((match) => match[1] as string))]
  const near = nearest(unknown.replace(/^-+/, ''), flags)
  return `unknown option ${unknown}${near === undefined ? '' : `: did you mean --${near}?`}`
}

/**
 * The candidate closest to `key`: the same but for case, containing or contained, or within two
 * edits. What a misspelt option, flag or command is taken to mean.
 * @internal
 */
export function nearest(key: string, candidates: readonly string[]): string | undefined {
  const lower = key.toLowerCase()
  const scored = candidates.map((candidate) => {
    const other = candidate.toLowerCase()
    const apart = edits(lower, other)
    // One inside the other: the nearer in length first.
    const score = apart === 0 ? 0 : lower.includes(other) || other.includes(lower) ? 1 + apart / 1000 : 1 + apart
    return { candidate, score }
  })
  const best = scored.reduce((a, b) => (b.score < a.score ? b : a), { candidate: '', score: 4 })
  return best.score <= 3 ? best.candidate : undefined
}

/** Levenshtein distance. */
function edits(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const next = [i]
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    row = next
  }
  return row[b.length]
}

/** A Uint8Array over the bytes of any ArrayBuffer or view, without copying. */
export function bytesOf(name: string, value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
  if (value instanceof ArrayBuffer || value instanceof SharedArrayBuffer) return new Uint8Array(value)
  throw argumentError(name, 'an ArrayBuffer, a TypedArray, a DataView or a Buffer', value)
}

/** An optional AbortSignal, or a TypeError. */
export function optionalSignal(name: string, value: unknown): AbortSignal | undefined {
  if (value !== undefined && !(value instanceof AbortSignal)) throw argumentError(name, 'an AbortSignal', value)
  return value
}
