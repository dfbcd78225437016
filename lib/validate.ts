// Type checks of public arguments. Ranges and alignment are checked in the core, which knows the
// page size; here only the JavaScript types are, so a wrong type is a TypeError, as in Node.
import { argumentError } from './errors'

export function integer(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw argumentError(name, 'a non-negative safe integer', value)
  }
  return value
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
