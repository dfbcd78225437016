// Checks of public arguments, the way Node checks its own: a value of the wrong type is a
// TypeError (ERR_INVALID_ARG_TYPE); a number that is no integer, negative, or past its bound is a
// RangeError (ERR_OUT_OF_RANGE). The bounds that depend on a region (its size, its page size) are
// checked in the core, which throws the same RangeError for a size of 0 or an offset past the end,
// and a UffdError EINVAL for what is not a multiple of the page size.
import { argumentError, rangeError } from './errors'

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
