// Where a Firecracker server keeps the working-set trace it replays without a recording run: a
// file, or an object beside the memory's own in its store, where the next restore of that
// snapshot on any host finds it. It loads the trace, says when one is stale, and stores the first
// one a restore records.
import { accessSync, constants, existsSync, renameSync, rmSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import { argumentError, UffdError } from './errors'
import type { Source } from './source'
import { parseTrace, readTrace, type TracedMemory, traceOf, traceText, type WorkingSetTrace, writeTrace } from './trace'

/** Appended to the memory's object key (or to its topmost file's path) to name the trace kept beside it. */
export const WORKING_SET_SUFFIX = '.working-set.json'

/** Refuses, with what to do, a trace path that could not be written when a VM exits. */
export function checkRecordable(path: string, name: string): void {
  if (typeof path !== 'string') throw argumentError(name, 'a path', path)
  const folder = dirname(path)
  const refuse = (why: string, code: 'ENOENT' | 'ENOTDIR' | 'EACCES' | 'EISDIR') =>
    new UffdError(`cannot record the trace to ${path}: ${why}`, { code })
  const stat = statSync(folder, { throwIfNoEntry: false })
  if (!stat) throw refuse(`its folder ${folder} does not exist`, 'ENOENT')
  if (!stat.isDirectory()) throw refuse(`${folder} is not a folder`, 'ENOTDIR')
  if (statSync(path, { throwIfNoEntry: false })?.isDirectory()) throw refuse('it is a folder', 'EISDIR')
  try {
    accessSync(folder, constants.W_OK)
  } catch {
    throw refuse(`its folder ${folder} is not writable`, 'EACCES')
  }
}

/** What a working set is kept for: the memory's object, or its files (base first). */
export interface WorkingSetMemory {
  readonly object: Source | undefined
  readonly files: readonly string[]
  /** What a trace names as the memory. */
  readonly traced: () => TracedMemory[]
}

/** A trace kept without a recording run (the `workingSet` option of a Firecracker server). */
export class WorkingSet {
  /** The valid trace, once there is one: restores replay it, and record none. */
  trace: WorkingSetTrace | undefined
  /** Where it is kept: a path, or an object's URL once it was reached. */
  where: string
  readonly #object: Source | undefined
  readonly #memory: WorkingSetMemory
  readonly #report: (error: UffdError) => void
  #saving: Promise<void> | undefined

  /**
   * `option` is a path, or `true` for beside the memory: the object `KEY.working-set.json` in
   * the memory's store, or the file `FILE.working-set.json` next to its topmost file. A file is
   * read now; an object when {@link load} is awaited.
   */
  constructor(option: string | true, memory: WorkingSetMemory, report: (error: UffdError) => void) {
    this.#memory = memory
    this.#report = report
    const inStore = option === true && memory.object?.kind === 'objectStore'
    if (option !== true && typeof option !== 'string')
      throw argumentError('options.workingSet', 'a path, or true (beside the memory)', option)
    if (option === true && !inStore && memory.files.length === 0) {
      throw argumentError('options.workingSet', 'a path: the memory is neither an object in a store nor a file', option)
    }
    this.#object = inStore ? memory.object : undefined
    this.where =
      option !== true
        ? option
        : inStore
          ? `the object KEY${WORKING_SET_SUFFIX} beside the memory object`
          : `${memory.files.at(-1)}${WORKING_SET_SUFFIX}`
    if (this.#object) return
    checkRecordable(this.where, 'options.workingSet')
    if (existsSync(this.where)) this.trace = this.#valid(() => readTrace(this.where, memory.traced()))
  }

  /** Reads a trace kept in the store (a file was read already). Never rejects: a failure is reported. */
  async load(): Promise<void> {
    const object = this.#object
    if (!object) return
    try {
      const { url, bytes } = await object.readBeside(WORKING_SET_SUFFIX)
      this.where = url
      if (bytes) this.trace = this.#valid(() => parseTrace(bytes.toString('utf8'), url, this.#memory.traced()))
    } catch (error) {
      this.#report(
        new UffdError(`reading the working-set trace beside the memory failed: ${(error as Error).message}; restores record one`, {
          code: (error as UffdError).code ?? 'EIO',
          cause: error,
        }),
      )
    }
  }

  /**
   * Keeps the trace of a restore served to its end while there is none: `saved` is called with
   * where it went and how many pages it lists. A failure is reported, and the next restore
   * records again.
   */
  save(pageSize: number, offsets: readonly number[], saved: (where: string, pages: number) => void): void {
    if (this.trace || this.#saving) return
    const failed = (error: unknown) =>
      this.#report(new UffdError(`writing the trace ${this.where} failed: ${(error as Error).message}`, { code: 'EIO', cause: error }))
    const object = this.#object
    if (!object) {
      const temporary = `${this.where}.${process.pid}.tmp`
      try {
        this.trace = writeTrace(temporary, this.#memory.traced(), pageSize, offsets)
        renameSync(temporary, this.where)
        saved(this.where, this.trace.pages.length)
      } catch (error) {
        this.trace = undefined
        rmSync(temporary, { force: true })
        failed(error)
      }
      return
    }
    const trace = traceOf(this.#memory.traced(), pageSize, offsets)
    this.#saving = object
      .writeBeside(WORKING_SET_SUFFIX, Buffer.from(traceText(trace)))
      .then((url) => {
        this.where = url
        this.trace = trace
        saved(url, trace.pages.length)
      }, failed)
      .finally(() => {
        this.#saving = undefined
      })
  }

  /** The trace `read` gives, or none: a stale or broken one is said, and replaced by the next. */
  #valid(read: () => WorkingSetTrace): WorkingSetTrace | undefined {
    try {
      return read()
    } catch (error) {
      const stale = new UffdError(`${(error as Error).message}; a new one is recorded`, { code: 'ERR_UFFD_TRACE_STALE', cause: error })
      queueMicrotask(() => this.#report(stale))
      return undefined
    }
  }

  /** Whether a trace is being stored. */
  get saving(): boolean {
    return this.#saving !== undefined
  }

  /** Settles once no trace is being stored. */
  async settled(): Promise<void> {
    await this.#saving
  }
}
