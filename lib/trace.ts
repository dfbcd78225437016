// Working-set traces: the order in which a restore first touched the pages of a memory file, recorded
// natively on the fault path, saved to a file, and replayed first on the next restore.
import { createHash } from 'node:crypto'
import { closeSync, fstatSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs'
import type { BindingRecorder } from './binding'
import { argumentError, UffdError } from './errors'
import { binding } from './loader'

/** The format's name and version, the first fields of every trace file. */
export const TRACE_FORMAT = 'userfaultfd-working-set'
/** The version of the trace format this package writes and reads. */
export const TRACE_VERSION = 1

/** What names a memory file in a trace: its size and a fingerprint of its content. */
export interface MemoryFingerprint {
  /** The file's size in bytes. */
  readonly size: number
  /** SHA-256 (hex) of the size and of 64 KiB samples at the start, the end and 16 places between. */
  readonly fingerprint: string
}

/**
 * A trace file (JSON):
 * `{ "format": "userfaultfd-working-set", "version": 1, "memory": [MemoryFingerprint...], "pageSize": 4096, "pages": [...] }`.
 * `memory` names the memory files, base first (one entry unless the memory is layered); `pages`
 * are page numbers in the memory file (file offset / pageSize), in the order they were first
 * touched.
 */
export interface WorkingSetTrace {
  /** Always {@link TRACE_FORMAT}. */
  readonly format: typeof TRACE_FORMAT
  /** {@link TRACE_VERSION} of the package that wrote it. */
  readonly version: number
  /** The memory files the trace was recorded over, each by its size and fingerprint. */
  readonly memory: readonly MemoryFingerprint[]
  /** The page size of the recorded memory. */
  readonly pageSize: number
  /** The file offsets of the pages, in the order they were first touched. */
  readonly pages: readonly number[]
}

const SAMPLE = 64 * 1024
const SAMPLES_BETWEEN = 16

/** The size and content fingerprint of a memory file. */
export function fingerprintOf(path: string): MemoryFingerprint {
  if (typeof path !== 'string') throw argumentError('path', 'a path', path)
  const fd = openSync(path, 'r')
  try {
    const size = fstatSync(fd).size
    const hash = createHash('sha256').update(String(size))
    const buffer = Buffer.alloc(SAMPLE)
    const at = [
      0,
      ...Array.from({ length: SAMPLES_BETWEEN }, (_, i) => Math.floor((size * (i + 1)) / (SAMPLES_BETWEEN + 1))),
      size - SAMPLE,
    ]
    for (const offset of at) {
      const read = readSync(fd, buffer, 0, SAMPLE, Math.max(0, offset))
      hash.update(buffer.subarray(0, read))
    }
    return { size, fingerprint: hash.digest('hex') }
  } finally {
    closeSync(fd)
  }
}

/**
 * Records, on the native fault path, the pages that faults map from a source, in the order they
 * were first touched: pass it as `trace` to {@link Userfaultfd.serve}, then {@link writeTrace}.
 */
export class TraceRecorder {
  readonly #binding: BindingRecorder = new binding.BindingRecorder()

  /** The file offsets of the pages recorded so far, in the order they were first touched. */
  offsets(): number[] {
    return this.#binding.pages()
  }

  /** @internal */
  get binding(): BindingRecorder {
    return this.#binding
  }
}

/**
 * A memory a trace is of: a file's path (its fingerprint is computed), or a memory that is not a
 * file (an object in a store) by its size and a fingerprint of its own (the store's ETag), and a
 * name for messages.
 */
export type TracedMemory =
  | string
  | (MemoryFingerprint & {
      /** What messages call it ("the memory object"). */
      readonly name: string
    })

const fingerprintOfMemory = (memory: TracedMemory): MemoryFingerprint =>
  typeof memory === 'string' ? fingerprintOf(memory) : { size: memory.size, fingerprint: memory.fingerprint }
const nameOf = (memory: TracedMemory): string => (typeof memory === 'string' ? memory : memory.name)

/** The trace of `offsets` (file offsets, in order) for the memory files `memory` (base first). */
export function traceOf(memory: readonly TracedMemory[], pageSize: number, offsets: readonly number[]): WorkingSetTrace {
  return {
    format: TRACE_FORMAT,
    version: TRACE_VERSION,
    memory: memory.map(fingerprintOfMemory),
    pageSize,
    pages: offsets.map((offset) => Math.floor(offset / pageSize)),
  }
}

/** A trace as its file holds it: JSON and a newline. */
export const traceText = (trace: WorkingSetTrace): string => `${JSON.stringify(trace)}\n`

/** Writes a trace of `offsets` (file offsets, in order) for the memory files `memory` (base first). */
export function writeTrace(path: string, memory: readonly TracedMemory[], pageSize: number, offsets: readonly number[]): WorkingSetTrace {
  const trace = traceOf(memory, pageSize, offsets)
  writeFileSync(path, traceText(trace))
  return trace
}

/**
 * Reads a trace and checks that it belongs to the memory files `memory` (base first): the same
 * number of files, each of the same size and fingerprint. Throws a UffdError EINVAL that says
 * which differs otherwise, or if the file is not a trace of a version this package reads.
 */
export function readTrace(path: string, memory: readonly TracedMemory[]): WorkingSetTrace {
  return parseTrace(readFileSync(path, 'utf8'), path, memory)
}

/**
 * A trace from its text (what {@link readTrace} reads from a file; `path` names it in messages),
 * checked as `readTrace` checks it.
 */
export function parseTrace(text: string, path: string, memory: readonly TracedMemory[]): WorkingSetTrace {
  let trace: WorkingSetTrace
  try {
    trace = JSON.parse(text) as WorkingSetTrace
  } catch (cause) {
    throw new UffdError(`${path} is not a working-set trace: ${(cause as Error).message}`, { code: 'EINVAL', cause })
  }
  if (trace?.format !== TRACE_FORMAT || trace.version !== TRACE_VERSION) {
    throw new UffdError(`${path} is not a ${TRACE_FORMAT} trace of version ${TRACE_VERSION}`, { code: 'EINVAL' })
  }
  if (!Array.isArray(trace.pages) || !Array.isArray(trace.memory)) {
    throw new UffdError(`${path} is a malformed trace: it has no "pages" or no "memory" array`, { code: 'EINVAL' })
  }
  const { pageSize } = trace
  if (!Number.isSafeInteger(pageSize) || pageSize < 4096 || pageSize > 2 ** 30 || (pageSize & (pageSize - 1)) !== 0) {
    throw new UffdError(`the trace ${path} has pageSize ${JSON.stringify(pageSize)}: not a power of two from 4096 to 1 GiB`, {
      code: 'EINVAL',
    })
  }
  if (trace.memory.length !== memory.length) {
    throw new UffdError(`the trace ${path} was recorded for ${trace.memory.length} memory file(s), not ${memory.length}`, {
      code: 'EINVAL',
    })
  }
  let size = 0
  memory.forEach((file, i) => {
    const now = fingerprintOfMemory(file)
    size = Math.max(size, now.size)
    const then = trace.memory[i]
    if (now.size !== then?.size || now.fingerprint !== then.fingerprint) {
      throw new UffdError(
        `the trace ${path} was recorded for another memory file than ${nameOf(file)} (size ${then?.size} vs ${now.size}, or its content differs): record it again`,
        { code: 'EINVAL' },
      )
    }
  })
  // Every page a whole page of the memory: a bad one is refused now, not when a VM would replay it.
  const pages = size / pageSize
  const bad = trace.pages.findIndex((page) => !Number.isSafeInteger(page) || page < 0 || page >= pages)
  if (bad >= 0) {
    throw new UffdError(
      `the trace ${path} has ${JSON.stringify(trace.pages[bad])} at pages[${bad}]: not a page number of its memory (0 to ${Math.ceil(pages) - 1})`,
      { code: 'EINVAL' },
    )
  }
  return trace
}
