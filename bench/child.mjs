// A child process of the benchmark runner (bench/run.mjs) that measures this package.
//
//   node bench/child.mjs '<JSON array of measurement specs>'
//
// Runs the specs in order and prints one JSON line per spec on stdout: `{ id, ok: true, ... }`,
// `{ id, ok: false, error }`, or `{ id, ok: false, unsupported }` when this build of the package
// lacks what the spec asks for (several readers or handler workers: the scaling scenario). The
// runner spawns it under `taskset -c 0` for the pinned figures.
// Every userfaultfd, region and worker it opens is closed before the next spec starts.
import { once } from 'node:events'
import { closeSync, openSync, readFileSync, readSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { FILL, scanByte, TALLY_STRIDE, touchTimed } from './common.mjs'

const TOUCHER = new URL('./toucher.mjs', import.meta.url)
const HANDLER = new URL('./handler.mjs', import.meta.url)
const MiB = 1024 * 1024

/** Touch and free some memory, so that the pages the guest gave back to the host are backed again. */
function warmMemory(mib) {
  if (!mib) return
  const region = Region.anonymous(mib * MiB)
  new Uint8Array(region.buffer).fill(1)
  region.close()
}

/** Opens a userfaultfd whose 'error' events are collected (a benchmark must not hide them). */
function openUffd(spinMicros, more) {
  const uffd = new Userfaultfd({ ...(spinMicros ? { spinMicros } : {}), ...more })
  const errors = []
  uffd.on('error', (error) => errors.push(`${error.code}: ${error.message}`))
  return { uffd, errors }
}

/** The counters, read after a pause: the loop thread bumps them after the ioctl that woke the reader. */
async function statsOf(uffd) {
  await new Promise((resolve) => setTimeout(resolve, 20))
  const s = uffd.stats
  return {
    missing: s.faults.missing,
    messages: s.messages,
    batches: s.batches,
    native: s.native,
    copies: s.resolutions.copy,
    zeropages: s.resolutions.zeropage,
    eexist: s.eexist,
    duplicates: s.duplicates,
    fallbacks: s.fallbacks,
    selfFaults: s.selfFaults,
    errors: s.errors,
  }
}

/** This build of the package cannot do what a spec asks: the row is "not supported", not failed. */
class Unsupported extends Error {}

/**
 * Whether `error`, thrown by a call given `option`, refuses an argument (a build without the
 * option, or with a limit below the value), or names `options.<option>`. Any other error is a
 * failure of a build that has the option, and must not pass for "not supported".
 */
function refuses(error, option) {
  const argumentCodes = ['ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE', 'ERR_OUT_OF_RANGE']
  return argumentCodes.includes(error?.code) || String(error?.message).includes(`options.${option}`)
}

function unsupported(call, error) {
  return new Unsupported(`${call} refused the option: ${error.code ?? error.name}: ${error.message}`)
}

/** Throws if anything went wrong that the figures would hide. */
function check(what, { bad = 0, errors = [], stats }) {
  const problems = []
  if (bad) problems.push(`${bad} bytes read were not what the source holds`)
  if (errors.length) problems.push(`'error' events: ${errors.slice(0, 3).join('; ')}${errors.length > 3 ? ` (+${errors.length - 3})` : ''}`)
  if (stats?.fallbacks) problems.push(`${stats.fallbacks} faults resolved by the fallback`)
  if (problems.length) throw new Error(`${what}: ${problems.join('; ')}`)
}

/** A worker whose messages and failures are awaited one by one. */
class Peer {
  constructor(url, workerData) {
    this.worker = new Worker(url, { workerData })
    this.queue = []
    this.waiting = []
    this.failure = undefined
    this.exited = once(this.worker, 'exit').then(([code]) => code)
    this.worker.on('message', (message) => this.#push(message))
    this.worker.on('error', (error) => this.#fail(error))
    this.worker.on('exit', (code) => this.#fail(new Error(`worker exited with code ${code}`)))
  }
  #push(message) {
    const next = this.waiting.shift()
    if (next) next.resolve(message)
    else this.queue.push(message)
  }
  #fail(error) {
    this.failure ??= error
    for (const next of this.waiting.splice(0)) next.reject(this.failure)
  }
  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift())
    if (this.failure) return Promise.reject(this.failure)
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }))
  }
  async close() {
    await this.worker.terminate()
    await this.exited
  }
}

/** A memfd region whose page cache is full of FILL (written through an alias): minor faults map it. */
function filledShmem(size) {
  const region = Region.shmem(size, { name: 'bench' })
  const alias = region.alias()
  new Uint8Array(alias.buffer).fill(FILL)
  alias.close()
  return region
}

// ---- latency: one thread takes faults one by one ------------------------------------------------

async function latency({ contender, op, pages, warmup, spinMicros, warmMiB }) {
  warmMemory(warmMiB)
  // The timing loop is compiled before the timed faults (5 calls on resident memory of the same
  // size): left to tier up during them, the interpreter measured itself, about 0.6 us a fault.
  {
    const resident = new Uint8Array((warmup + pages) * 4096).fill(FILL)
    for (let k = 0; k < 5; k++) touchTimed(resident, 4096, 0, warmup, pages, FILL)
  }
  const { uffd, errors } = openUffd(spinMicros)
  const minor = op === 'continue'
  const region = minor ? filledShmem((warmup + pages) * 4096) : Region.anonymous((warmup + pages) * 4096)
  const pageSize = region.pageSize
  const expect = op === 'zero' ? 0 : FILL
  const modes = minor ? { minor: true } : { missing: true }
  let result
  let stats
  let peer
  try {
    if (contender === 'native') {
      const sources = { zero: () => Source.zero(), continue: () => Source.pageCache() }
      const source = sources[op]?.() ?? Source.bytes(new Uint8Array(region.size).fill(FILL))
      uffd.register(region, { ...modes, source })
      result = touchTimed(new Uint8Array(region.buffer), pageSize, 0, warmup, pages, expect)
    } else if (contender === 'worker' || contender === 'worker-fed') {
      uffd.register(region, modes)
      await uffd.handleInWorker(HANDLER, { workerData: { op, fill: FILL }, direct: contender === 'worker' })
      result = touchTimed(new Uint8Array(region.buffer), pageSize, 0, warmup, pages, expect)
    } else if (contender === 'js') {
      uffd.register(region, modes)
      const page = new Uint8Array(pageSize).fill(FILL)
      const resolvers = { zero: (fault) => void fault.zero(), continue: (fault) => void fault.continue() }
      uffd.handle(resolvers[op] ?? ((fault) => void fault.copy(page)))
      peer = new Peer(TOUCHER, { kind: 'latency', region: region.share(), warmup, count: pages, expect })
      result = await peer.next()
    } else {
      throw new Error(`unknown latency contender ${contender}`)
    }
    stats = await statsOf(uffd)
  } finally {
    if (peer) await peer.close()
    uffd.close()
    region.close()
  }
  check(`latency ${contender} ${op}`, { bad: result.bad, errors, stats })
  if (contender === 'native' && stats.native !== warmup + pages) {
    throw new Error(`native source resolved ${stats.native} of ${warmup + pages} faults natively: ${JSON.stringify(stats)}`)
  }
  return { latNs: result.latNs, residentNs: result.residentNs, stats }
}

// ---- throughput: N worker threads fault at once -------------------------------------------------

/** Opens the userfaultfd of a throughput measurement, with `readers` reader threads if given. */
function openReaders(spinMicros, readers) {
  if (readers === undefined) return openUffd(spinMicros)
  try {
    return openUffd(spinMicros, { readers })
  } catch (error) {
    if (readers > 1 && refuses(error, 'readers')) throw unsupported(`new Userfaultfd({ readers: ${readers} })`, error)
    throw error
  }
}

/**
 * Resolves with how many handler workers loaded bench/handler.mjs (the tally's element 0) once
 * `workers` did, or after a second: a build may report a worker ready before all are.
 */
async function handlerWorkersLoaded(tally, workers) {
  const counts = new Int32Array(tally)
  for (let waited = 0; Atomics.load(counts, 0) < workers && waited < 1000; waited += 10) await new Promise((r) => setTimeout(r, 10))
  return Atomics.load(counts, 0)
}

/** Faults each handler worker copied, from the tally (in the order the workers loaded). */
function handlerWorkerFaults(tally, loaded) {
  const counts = new Int32Array(tally)
  const out = []
  for (let k = 1; k <= loaded && (k + 1) * TALLY_STRIDE <= counts.length; k++) out.push(Atomics.load(counts, k * TALLY_STRIDE))
  return out
}

/**
 * `threads` worker threads fault at once, each on its own pages. `readers` (native) and `workers`
 * (worker) are the scaling scenario's: the throughput scenario leaves them out and asks the
 * package for neither.
 */
async function throughput({ contender, threads, pages, warmup, spinMicros, warmMiB, readers, workers }) {
  warmMemory(warmMiB)
  const per = Math.floor(pages / threads)
  const slice = warmup + per
  const { uffd, errors } = openReaders(spinMicros, contender === 'native' ? readers : undefined)
  const region = Region.anonymous(slice * threads * 4096)
  const pageSize = region.pageSize
  const peers = []
  let elapsedNs
  let bad = 0
  let stats
  let readersReported
  let tally
  let loaded
  try {
    if (contender === 'native') {
      uffd.register(region, { source: Source.bytes(new Uint8Array(region.size).fill(FILL)) })
      // A build with the option counts its reader threads here (one with the defaults); a build
      // without it has no such counter, or ignored the option.
      readersReported = uffd.stats.readers
      if (readers > 1 && readersReported !== readers) {
        const said = readersReported === undefined ? 'there is no uffd.stats.readers' : `uffd.stats.readers is ${readersReported}`
        throw new Unsupported(`new Userfaultfd({ readers: ${readers} }): ${said} once a native source is registered`)
      }
    } else if (contender === 'js') {
      uffd.register(region)
      const page = new Uint8Array(pageSize).fill(FILL)
      uffd.handle((fault) => void fault.copy(page))
    } else if (contender === 'worker' && workers === undefined) {
      uffd.register(region)
      await uffd.handleInWorker(HANDLER, { workerData: { op: 'copy', fill: FILL } })
    } else if (contender === 'worker') {
      uffd.register(region)
      const call = `handleInWorker(module, { workers: ${workers} })`
      tally = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT * TALLY_STRIDE * (workers + 1))
      try {
        await uffd.handleInWorker(HANDLER, { workerData: { op: 'copy', fill: FILL, tally }, workers })
      } catch (error) {
        if (workers > 1 && refuses(error, 'workers')) throw unsupported(call, error)
        throw error
      }
      loaded = await handlerWorkersLoaded(tally, workers)
      if (workers > 1 && loaded < workers) throw new Unsupported(`${call} loaded the handler in ${loaded} worker${loaded === 1 ? '' : 's'}`)
      if (loaded !== workers) throw new Error(`${call} loaded the handler in ${loaded} workers`)
    } else {
      throw new Error(`unknown throughput contender ${contender}`)
    }
    const flag = new SharedArrayBuffer(4)
    for (let k = 0; k < threads; k++) {
      const data = { kind: 'throughput', region: region.share(), first: k * slice, warmup, count: per, expect: FILL, flag }
      peers.push(new Peer(TOUCHER, data))
    }
    for (const peer of peers) {
      const message = await peer.next()
      if (message.type !== 'ready') throw new Error(`unexpected message ${JSON.stringify(message)}`)
    }
    const t0 = process.hrtime.bigint()
    const start = new Int32Array(flag)
    Atomics.store(start, 0, 1)
    Atomics.notify(start, 0)
    let end = t0
    for (const peer of peers) {
      const message = await peer.next()
      const at = BigInt(message.end)
      if (at > end) end = at
      bad += message.bad
    }
    elapsedNs = Number(end - t0)
    stats = await statsOf(uffd)
  } finally {
    await Promise.all(peers.map((peer) => peer.close()))
    uffd.close()
    region.close()
  }
  check(`throughput ${contender} x${threads}`, { bad, errors, stats })
  const faults = per * threads
  if (contender === 'native' && stats.native !== slice * threads) {
    throw new Error(`native source resolved ${stats.native} of ${slice * threads} faults natively: ${JSON.stringify(stats)}`)
  }
  const result = { faults, elapsedNs, faultsPerSec: faults / (elapsedNs / 1e9), stats }
  if (readers !== undefined && contender === 'native') result.readersReported = readersReported ?? null
  if (tally) result.workerFaults = handlerWorkerFaults(tally, loaded)
  return result
}

// ---- scan: one byte per page of a file, by the main thread ---------------------------------------

function scanBytes(u8, pageSize, pages, t0) {
  let bad = 0
  let sum = 0
  const v0 = u8[0]
  const first = performance.now()
  if (v0 !== scanByte(0)) bad++
  sum += v0
  for (let i = 1; i < pages; i++) {
    const v = u8[i * pageSize]
    if (v !== scanByte(i)) bad++
    sum += v
  }
  const end = performance.now()
  return { ttfbNs: Math.round((first - t0) * 1e6), elapsedNs: Math.round((end - t0) * 1e6), bad, sum }
}

async function scan({ contender, file, size, chunk, warmMiB }) {
  warmMemory(warmMiB)
  const pageSize = 4096
  const pages = size / pageSize
  if (contender === 'readFileSync') {
    const t0 = performance.now()
    const bytes = readFileSync(file)
    if (bytes.length !== size) throw new Error(`${file} has ${bytes.length} bytes, not ${size}`)
    const result = scanBytes(bytes, pageSize, pages, t0)
    check('scan readFileSync', result)
    return { ...result, bytes: size, mibPerSec: size / MiB / (result.elapsedNs / 1e9) }
  }
  const t0 = performance.now()
  const { uffd, errors } = openUffd(0)
  const region = Region.anonymous(size)
  let result
  let stats
  let setupNs
  let prefetching
  try {
    if (contender === 'prefill' || contender === 'prefill-buffer') {
      uffd.register(region)
      const fd = openSync(file, 'r')
      // The staging buffer: page-aligned memory (an unregistered region), or a Buffer, which malloc
      // places 16 bytes past a page boundary, where pread(2) copies ~3x slower on this machine.
      const staging = contender === 'prefill' ? Region.anonymous(chunk) : undefined
      try {
        const buffer = staging ? new Uint8Array(staging.buffer) : Buffer.allocUnsafeSlow(chunk)
        for (let offset = 0; offset < size; offset += chunk) {
          const len = Math.min(chunk, size - offset)
          let got = 0
          while (got < len) {
            const n = readSync(fd, buffer, got, len - got, offset + got)
            if (n === 0) throw new Error(`${file} ended at ${offset + got}`)
            got += n
          }
          let done = 0
          while (done < len) {
            const mapped = uffd.copy(region, offset + done, buffer.subarray(done, len))
            if (mapped <= 0) throw new Error(`uffd.copy mapped ${mapped} bytes at ${offset + done}`)
            done += mapped
          }
        }
      } finally {
        closeSync(fd)
        staging?.close()
      }
    } else {
      const readahead = {
        'file-ra16': { pages: 16 },
        'file-adaptive': { pages: 16, adaptive: true, maxPages: 512 },
        'file-nora': undefined,
        'file-prefetch': { pages: 16, adaptive: true, maxPages: 512 },
      }
      if (!(contender in readahead)) throw new Error(`unknown scan contender ${contender}`)
      uffd.register(region, { source: Source.file(file), readahead: readahead[contender] })
      if (contender === 'file-prefetch') prefetching = uffd.prefetch(region)
    }
    // The first ArrayBuffer over a large region may start a garbage collection (V8 counts it as
    // external memory): part of the set-up a program pays too.
    const u8 = new Uint8Array(region.buffer)
    setupNs = Math.round((performance.now() - t0) * 1e6)
    result = scanBytes(u8, pageSize, pages, t0)
    await prefetching
    stats = await statsOf(uffd)
  } finally {
    uffd.close()
    region.close()
  }
  check(`scan ${contender}`, { bad: result.bad, errors, stats })
  return { ...result, setupNs, bytes: size, mibPerSec: size / MiB / (result.elapsedNs / 1e9), stats }
}

// ---- resident memory after touching a fraction of the file -------------------------------------------

function residentBytes() {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))
  return match ? Number(match[1]) * 1024 : Number.NaN
}

/** Pages to touch: `fraction` of them, spread over the file by a fixed pseudo-random walk. */
function touchedPages(pages, fraction) {
  const count = Math.max(1, Math.round(pages * fraction))
  const picked = new Set()
  let x = 12345
  while (picked.size < count) {
    x = (x * 1103515245 + 12345) % 2 ** 31
    picked.add(x % pages)
  }
  return [...picked]
}

async function resident({ contender, file, size, fraction }) {
  const pageSize = 4096
  const touch = touchedPages(size / pageSize, fraction)
  const before = residentBytes()
  const t0 = performance.now()
  let bad = 0
  if (contender === 'readFileSync') {
    const bytes = readFileSync(file)
    for (const page of touch) if (bytes[page * pageSize] !== scanByte(page)) bad++
    const elapsedNs = Math.round((performance.now() - t0) * 1e6)
    check('resident readFileSync', { bad })
    return { residentBytes: residentBytes() - before, touchedBytes: touch.length * pageSize, size, elapsedNs }
  }
  const readahead = { 'file-nora': undefined, 'file-ra16': { pages: 16 }, 'file-adaptive': { pages: 16, adaptive: true, maxPages: 512 } }
  if (!(contender in readahead)) throw new Error(`unknown resident contender ${contender}`)
  const { uffd, errors } = openUffd(0)
  const region = Region.anonymous(size)
  try {
    uffd.register(region, { source: Source.file(file), readahead: readahead[contender] })
    const u8 = new Uint8Array(region.buffer)
    for (const page of touch) if (u8[page * pageSize] !== scanByte(page)) bad++
    const elapsedNs = Math.round((performance.now() - t0) * 1e6)
    const grown = residentBytes() - before
    const stats = await statsOf(uffd)
    check(`resident ${contender}`, { bad, errors, stats })
    return { residentBytes: grown, touchedBytes: touch.length * pageSize, size, elapsedNs, stats }
  } finally {
    uffd.close()
    region.close()
  }
}

// ---- the kernel's own fault: no userfaultfd ------------------------------------------------------

async function floor({ pages, warmMiB }) {
  warmMemory(warmMiB)
  const a = Region.anonymous(pages * 4096)
  const b = Region.anonymous(pages * 4096)
  try {
    const pageSize = a.pageSize
    const read = touchTimed(new Uint8Array(a.buffer), pageSize, 0, 0, pages, 0)
    const u8 = new Uint8Array(b.buffer)
    const lat = new Float64Array(pages)
    for (let i = 0; i < pages; i++) {
      const t0 = performance.now()
      u8[i * pageSize] = 1
      lat[i] = performance.now() - t0
    }
    if (read.bad) throw new Error(`${read.bad} bytes of fresh anonymous memory were not zero`)
    return { readNs: read.latNs, writeNs: Array.from(lat, (ms) => Math.round(ms * 1e6)), residentNs: read.residentNs }
  } finally {
    a.close()
    b.close()
  }
}

const KINDS = { latency, throughput, scan, resident, floor }

async function main() {
  const specs = JSON.parse(process.argv[2] ?? '[]')
  for (const spec of specs) {
    let line
    try {
      const run = KINDS[spec.kind]
      if (!run) throw new Error(`unknown measurement kind ${spec.kind}`)
      line = { id: spec.id, ok: true, ...(await run(spec)) }
    } catch (error) {
      line =
        error instanceof Unsupported
          ? { id: spec.id, ok: false, unsupported: error.message }
          : { id: spec.id, ok: false, error: error?.stack ?? String(error) }
    }
    process.stdout.write(`${JSON.stringify(line)}\n`)
  }
  // Everything was closed: the process should exit by itself now. If a handle keeps it alive,
  // say which and exit with a distinct status so the runner reports it.
  setTimeout(() => {
    process.stderr.write(`child: still alive 5 s after the last measurement: ${process.getActiveResourcesInfo().join(', ')}\n`)
    process.exit(3)
  }, 5000).unref()
}

main().catch((error) => {
  process.stderr.write(`child: ${error?.stack ?? error}\n`)
  process.exitCode = 1
})
