// Shared by the ava tests: regions of each kind, the byte pattern pages are served with, a toucher
// worker that takes faults from another thread, and time limits so that a hang fails a test.
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { extname, join } from 'node:path'
import { Worker } from 'node:worker_threads'
import type { ExecutionContext } from 'ava'
import { type MemoryKind, Region, UffdError, type UffdErrorCode, Userfaultfd } from 'userfaultfd'

export const LIMIT_MS = 15_000

/** The repository's root: from __test__/helpers under Bun (which runs the sources), from build/test/__test__/helpers under ava. */
export const root = join(__dirname, ...(extname(__filename) === '.ts' ? ['..', '..'] : ['..', '..', '..', '..']))
export const HUGE_PAGE = 2 * 1024 * 1024

/** The byte at `index` of the page at `offset`, as the test pagers serve it. */
export function patternByte(offset: number, pageSize: number, index: number, seed = 0): number {
  return ((offset / pageSize) * 31 + index * 7 + seed + 1) & 0xff
}

/** A page (or pages) of the pattern, starting at `offset`. */
export function patternPage(offset: number, pageSize: number, pages = 1, seed = 0): Uint8Array {
  const bytes = new Uint8Array(pageSize * pages)
  for (let page = 0; page < pages; page++) {
    const at = offset + page * pageSize
    for (const index of [0, 1, 5, 100, pageSize - 1]) bytes[page * pageSize + index] = patternByte(at, pageSize, index, seed)
  }
  return bytes
}

/** Free huge pages of 2 MiB, from sysfs. */
/**
 * `define` (ava's `test` by default) when `pages` 2 MiB huge pages are free, else its `skip`; and
 * the title with the reason when skipped: a test that cannot get huge pages says so and is not run.
 */
export function withHugePages<T extends { skip: unknown }>(pages: number, define: T, title: string): [T | T['skip'], string] {
  const free = freeHugePages()
  if (free >= pages) return [define, title]
  return [define.skip, `${title} (skipped: needs ${pages} free 2 MiB huge pages, found ${free}: sysctl -w vm.nr_hugepages=N)`]
}

export function freeHugePages(): number {
  try {
    return Number(readFileSync('/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages', 'utf8').trim())
  } catch {
    return 0
  }
}

/** A region of `pages` pages of a kind (huge pages for hugetlb). */
export function makeRegion(kind: MemoryKind, pages: number): Region {
  switch (kind) {
    case 'anonymous':
      return Region.anonymous(pages * 4096)
    case 'shmem':
      return Region.shmem(pages * 4096, { name: 'test' })
    case 'hugetlb':
      return Region.hugetlb(pages * HUGE_PAGE)
    case 'remote':
      throw new Error('a remote region comes from another process')
  }
}

/** The memory types of the kernel's uffd-unit-tests: the kinds, and shmem and hugetlb mapped MAP_PRIVATE. */
export type MemoryType = 'anon' | 'shmem' | 'shmem-private' | 'hugetlb' | 'hugetlb-private'
export const MEMORY_TYPES: MemoryType[] = ['anon', 'shmem', 'shmem-private', 'hugetlb', 'hugetlb-private']

/** The region kind a memory type is made of. */
export function kindOf(type: MemoryType): MemoryKind {
  if (type === 'anon') return 'anonymous'
  return type.startsWith('hugetlb') ? 'hugetlb' : 'shmem'
}

/** A region of `pages` pages of a memory type (huge pages for the hugetlb ones). */
export function makeMemory(type: MemoryType, pages: number): Region {
  switch (type) {
    case 'shmem-private':
      return Region.shmem(pages * 4096, { name: 'test', private: true })
    case 'hugetlb-private':
      return Region.hugetlb(pages * HUGE_PAGE, { name: 'test', private: true })
    default:
      return makeRegion(kindOf(type), pages)
  }
}

/** Rejects if `promise` takes longer than `ms`, so that a hang fails the test instead of stalling. */
export function within<T>(promise: Promise<T>, what: string, ms = LIMIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
  })
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer))
}

/** How a child process ended, and all it printed (stdout and stderr). */
export interface ChildExit {
  code: number | null
  signal: NodeJS.Signals | null
  out: string
}

/** A child process whose output is collected: `exit` settles once it closed (its output whole), within `ms`. */
export function spawnCollecting(
  command: string,
  args: string[],
  what: string,
  ms = LIMIT_MS,
  options: { env?: NodeJS.ProcessEnv } = {},
): { child: ChildProcess; exit: Promise<ChildExit>; output: () => string } {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options })
  let out = ''
  const take = (chunk: Buffer) => {
    out += chunk
  }
  child.stdout?.on('data', take)
  child.stderr?.on('data', take)
  // 'close', not 'exit': the last lines may still be in the pipes when it exits.
  const exit = new Promise<ChildExit>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, out })))
  return { child, exit: within(exit, what, ms), output: () => out }
}

/** Polls until `condition` holds; fails instead of hanging. */
export function until(condition: () => boolean, what: string, ms = LIMIT_MS): Promise<void> {
  return within(
    (async () => {
      while (!condition()) await new Promise((resolve) => setTimeout(resolve, 10))
    })(),
    what,
    ms,
  )
}

/** The next 'error' event of a userfaultfd. */
export function nextError(uffd: Userfaultfd, ms = LIMIT_MS): Promise<UffdError> {
  return within(new Promise((resolve) => uffd.once('error', resolve)), 'an error event', ms)
}

export interface ReadRequest {
  offsets: number[]
  /** Write this byte at each offset before reading it back (a write fault). */
  write?: number
  /** Before reading, discard the page at `offset` this many times. */
  discard?: { offset: number; times: number }
}

export interface ReadResult {
  bytes: number[]
}

/** A worker thread that reads a region when asked: its reads are faults from another thread. */
export class Toucher {
  readonly #worker: Worker
  #pending: { resolve: (result: ReadResult) => void; reject: (error: Error) => void } | undefined

  constructor() {
    this.#worker = new Worker(join(__dirname, 'toucher.js'))
    this.#worker.on('message', (message: ReadResult | { error: string }) => {
      const pending = this.#pending
      this.#pending = undefined
      if ('error' in message) pending?.reject(new Error(message.error))
      else pending?.resolve(message)
    })
    this.#worker.on('error', (error) => this.#pending?.reject(error))
  }

  /** Reads (one request at a time per toucher) the offsets of a region in the worker thread. */
  read(region: Region, request: ReadRequest): Promise<ReadResult> {
    if (this.#pending) return Promise.reject(new Error('a Toucher serves one request at a time'))
    const answer = new Promise<ReadResult>((resolve, reject) => {
      this.#pending = { resolve, reject }
    })
    this.#worker.postMessage({ shared: region.share(), ...request })
    return within(answer, 'the toucher thread')
  }

  /** Whether `promise` settles within `ms` (false: the toucher is still asleep in a fault). */
  async answersWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
    const timeout = new Promise<false>((resolve) => setTimeout(() => resolve(false), ms))
    return Promise.race([promise.then(() => true), timeout])
  }

  terminate(): Promise<number> {
    return this.#worker.terminate()
  }
}

/**
 * Runs `body` with a Toucher, then, whatever happens, ends the toucher and closes `closing` in order
 * (a hang or a failed assertion must not leave a thread asleep in a fault).
 */
export async function withToucher(closing: Array<{ close(): void }>, body: (toucher: Toucher) => Promise<void>): Promise<void> {
  const toucher = new Toucher()
  try {
    await body(toucher)
  } finally {
    await toucher.terminate()
    for (const thing of closing) thing.close()
  }
}

/** A userfaultfd with an anonymous region of `pages` pages registered on it. */
export function anonymous(pages: number, options?: ConstructorParameters<typeof Userfaultfd>[0]) {
  const uffd = new Userfaultfd(options)
  const region = Region.anonymous(pages * 4096)
  uffd.register(region)
  return { uffd, region }
}

/** A promise and its resolve function, to hold a handler until the test lets it go. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open = () => {}
  const promise = new Promise<void>((resolve) => {
    open = resolve
  })
  return { promise, open }
}

/** Whether `error` is what an aborted signal rejects with. */
export function isAbortError(error: unknown): boolean {
  const { name, code } = error as { name?: string; code?: string }
  return name === 'AbortError' && code === 'ABORT_ERR'
}

/** Asserts that `fn` throws a UffdError with the code `expected` (and the syscall, if given). */
export function code(t: ExecutionContext, fn: () => unknown, expected: UffdErrorCode, syscall?: string): UffdError {
  const error = t.throws(fn) as UffdError
  t.true(error instanceof UffdError, `${String(error)} is a UffdError`)
  t.is(error.code, expected, error.message)
  if (syscall) t.is(error.syscall, syscall)
  return error
}
