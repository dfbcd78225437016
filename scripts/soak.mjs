#!/usr/bin/env node
// `node --expose-gc scripts/soak.mjs [--cycles N] [--workers N] [--rss-mib N]`
//
// The "no leaks" soak of the built package (run `npm run build:ts` first). Phase 1: N cycles of
// open -> anonymous region -> register -> a fault taken by a reader worker, served by a handler on
// this thread with a COPY whose bytes are checked -> close region and userfaultfd. Phase 2: M
// cycles of a handler worker (handleInWorker) started, serving a fault this thread takes, and
// stopped by close(); each cycle waits until the worker's thread is gone. For each phase the
// process's fds, threads, mappings and RSS are read from /proc/self at the start, after a warm-up
// (the first 1% of cycles) and at the end; the exit code is 1 if any byte was wrong, any 'error'
// event came, or fds, threads or mappings grew after the warm-up beyond a small tolerance, or RSS
// by more than --rss-mib (default 32) MiB.
//
// This file is also the module of its own worker threads: the reader (phase 1) and the pager
// that handleInWorker imports (phase 2, its default export).
import { readdirSync, readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { Region, Userfaultfd } from '../dist/index.mjs'

const PAGE = 4096
// Growth allowed between the warm-up and the end: V8's heap maps and unmaps a few areas of its own,
// and a worker's exit may still be finishing; 1,000 leaked regions would be 1,000 mappings.
const TOLERANCE = { fds: 2, threads: 2, maps: 50 }

/** The byte at `index` of page `page` in cycle `cycle`: what the handlers copy in and the readers check. */
function patternByte(page, index, cycle) {
  return (page * 31 + index * 7 + cycle + 1) & 0xff
}

/** One page of the pattern (the bytes the checks read: 0, 5 and the last). */
function patternPage(page, cycle) {
  const bytes = new Uint8Array(PAGE)
  for (const index of [0, 5, PAGE - 1]) bytes[index] = patternByte(page, index, cycle)
  return bytes
}

/** The pager of phase 2, run by handleInWorker in its worker: `workerData.cycle` seeds the pattern. */
export default function pager(fault) {
  fault.copy(patternPage(fault.offset / PAGE, workerData.cycle))
}

/** The reader of phase 1: reads the asked bytes of a region in this worker thread (each a fault). */
function reader(port) {
  port.on('message', ({ shared, offsets }) => {
    try {
      const region = Region.attach(shared)
      const view = new Uint8Array(region.buffer)
      const bytes = offsets.map((offset) => view[offset])
      // Let go of this thread's view at once: the mapping goes when its owner closes it.
      region.close()
      port.postMessage({ bytes })
    } catch (error) {
      port.postMessage({ error: String(error) })
    }
  })
}

function resources() {
  const status = readFileSync('/proc/self/status', 'utf8')
  const kib = (field) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1])
  return {
    fds: readdirSync('/proc/self/fd').length,
    threads: readdirSync('/proc/self/task').length,
    maps: readFileSync('/proc/self/maps', 'utf8').split('\n').length - 1,
    rssKiB: kib('VmRSS'),
    vmKiB: kib('VmSize'),
  }
}

const tick = () => new Promise((resolve) => setImmediate(resolve))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Collects garbage, then waits (up to 5 s) until the thread count stops falling: workers end asynchronously. */
async function settle() {
  for (let i = 0; i < 3; i++) {
    globalThis.gc()
    await tick()
  }
  let threads = resources().threads
  for (let waited = 0; waited < 5000; waited += 100) {
    await sleep(100)
    const now = resources().threads
    if (now >= threads) break
    threads = now
  }
  return resources()
}

/** Progress: a cli-progress bar on a terminal, else a line every 10%. */
async function progress(title, total) {
  let bar
  if (process.stderr.isTTY) {
    try {
      const { default: cliProgress } = await import('cli-progress')
      bar = new cliProgress.SingleBar(
        {
          format: `${title} [{bar}] {value}/{total} {eta_formatted} | fds {fds} threads {threads} maps {maps} RSS {rss} MiB`,
          hideCursor: true,
        },
        cliProgress.Presets.shades_classic,
      )
    } catch {
      bar = undefined
    }
  }
  const figures = () => {
    const r = resources()
    return { fds: r.fds, threads: r.threads, maps: r.maps, rss: (r.rssKiB / 1024).toFixed(1) }
  }
  bar?.start(total, 0, figures())
  const every = Math.max(1, Math.floor(total / 100))
  const started = performance.now()
  return {
    update(done) {
      if (bar) {
        if (done % every === 0 || done === total) bar.update(done, figures())
      } else if (done % Math.max(1, Math.floor(total / 10)) === 0 || done === total) {
        const f = figures()
        const seconds = ((performance.now() - started) / 1000).toFixed(1)
        console.log(
          `${title}: ${done}/${total} (${Math.round((100 * done) / total)}%, ${seconds} s) fds ${f.fds} threads ${f.threads} maps ${f.maps} RSS ${f.rss} MiB`,
        )
      }
    },
    stop() {
      bar?.stop()
    },
  }
}

/**
 * Runs `cycle(i)` `total` times, reading /proc/self at the start, after the warm-up and at the end;
 * returns the phase's figures and whether it stayed flat.
 */
async function phase(title, total, cycle, rssMiB) {
  const warmup = Math.max(10, Math.ceil(total / 100))
  const start = await settle()
  const bar = await progress(title, total)
  const began = performance.now()
  let warm
  let wrong = 0
  for (let i = 0; i < total; i++) {
    if (!(await cycle(i))) wrong++
    if (i + 1 === warmup) warm = await settle()
    bar.update(i + 1)
  }
  const seconds = (performance.now() - began) / 1000
  bar.stop()
  const end = await settle()
  warm ??= start
  const grown = {
    fds: end.fds - warm.fds,
    threads: end.threads - warm.threads,
    maps: end.maps - warm.maps,
    rssKiB: end.rssKiB - warm.rssKiB,
  }
  const failures = []
  if (wrong > 0) failures.push(`${wrong} cycles read wrong bytes or failed`)
  for (const key of ['fds', 'threads', 'maps']) {
    if (grown[key] > TOLERANCE[key]) failures.push(`${key} grew by ${grown[key]} after the warm-up (tolerance ${TOLERANCE[key]})`)
  }
  if (grown.rssKiB > rssMiB * 1024)
    failures.push(`RSS grew by ${(grown.rssKiB / 1024).toFixed(1)} MiB after the warm-up (limit ${rssMiB} MiB)`)
  const row = (r) => ({
    fds: r.fds,
    threads: r.threads,
    maps: r.maps,
    'RSS MiB': +(r.rssKiB / 1024).toFixed(1),
    'VmSize MiB': +(r.vmKiB / 1024).toFixed(1),
  })
  console.log(
    `\n${title}: ${total} cycles in ${seconds.toFixed(1)} s (${((seconds / total) * 1e6).toFixed(0)} us per cycle), warm-up ${warmup}`,
  )
  console.table({ start: row(start), [`after ${warmup}`]: row(warm), end: row(end) })
  for (const failure of failures) console.log(`FAIL ${title}: ${failure}`)
  if (failures.length === 0) console.log(`ok ${title}: flat after the warm-up`)
  return { title, cycles: total, seconds, start, warm, end, grown, wrong, failures }
}

async function main() {
  const { values } = parseArgs({
    options: {
      cycles: { type: 'string', default: '100000' },
      workers: { type: 'string', default: '1000' },
      'rss-mib': { type: 'string', default: '32' },
      json: { type: 'boolean', default: false },
    },
  })
  if (typeof globalThis.gc !== 'function') {
    console.error('run with node --expose-gc scripts/soak.mjs')
    process.exit(2)
  }
  const cycles = Number(values.cycles)
  const workers = Number(values.workers)
  const rssMiB = Number(values['rss-mib'])
  const errors = []
  const onError = (error) => {
    if (errors.length < 20) errors.push(`${error.code}: ${error.message}`)
  }
  const results = []

  // Phase 1: the handler runs here, a reader worker takes the faults.
  if (cycles > 0) {
    const worker = new Worker(new URL(import.meta.url), { workerData: { role: 'reader' } })
    let pending
    worker.on('message', (message) => pending?.(message))
    worker.on('error', (error) => pending?.({ error: String(error) }))
    const read = (region, offsets) =>
      new Promise((resolve) => {
        pending = resolve
        worker.postMessage({ shared: region.share(), offsets })
      })
    results.push(
      await phase(
        'open/register/fault/close',
        cycles,
        async (i) => {
          const uffd = new Userfaultfd()
          uffd.on('error', onError)
          // 1 MiB of address space each, one page touched: leaked regions would show at once.
          const region = Region.anonymous(256 * PAGE)
          uffd.register(region)
          uffd.handle((fault) => {
            fault.copy(patternPage(fault.offset / PAGE, i))
          })
          const page = i % 256
          const answer = await read(region, [page * PAGE, page * PAGE + 5, page * PAGE + PAGE - 1])
          uffd.close()
          region.close()
          if (answer.error) {
            onError({ code: 'reader', message: answer.error })
            return false
          }
          const [a, b, c] = answer.bytes
          return a === patternByte(page, 0, i) && b === patternByte(page, 5, i) && c === patternByte(page, PAGE - 1, i)
        },
        rssMiB,
      ),
    )
    await worker.terminate()
  }

  // Phase 2: a handler worker per cycle serves a fault that this thread takes, then stops.
  if (workers > 0) {
    let lingering = 0
    results.push(
      await phase(
        'handleInWorker start/fault/stop',
        workers,
        async (i) => {
          const threads = resources().threads
          const uffd = new Userfaultfd()
          uffd.on('error', onError)
          const region = Region.anonymous(16 * PAGE)
          uffd.register(region)
          await uffd.handleInWorker(new URL(import.meta.url), { workerData: { role: 'pager', cycle: i } })
          const page = i % 16
          const view = new Uint8Array(region.buffer)
          const ok = view[page * PAGE + 5] === patternByte(page, 5, i) && view[page * PAGE] === patternByte(page, 0, i)
          uffd.close()
          region.close()
          // close() terminates the worker without waiting: wait for its thread to go, so that each
          // cycle is a whole start and stop (and a worker that never ends shows here).
          let waited = 0
          while (resources().threads > threads && waited < 5000) {
            await sleep(2)
            waited += 2
          }
          if (waited >= 5000) lingering++
          return ok
        },
        rssMiB,
      ),
    )
    if (lingering > 0) {
      results.at(-1).failures.push(`${lingering} handler workers still had a thread 5 s after close()`)
      console.log(`FAIL: ${lingering} handler workers still had a thread 5 s after close()`)
    }
  }

  const failed = results.some((r) => r.failures.length > 0) || errors.length > 0
  for (const error of errors) console.log(`error event: ${error}`)
  if (values.json) console.log(JSON.stringify({ results, errors }))
  process.exitCode = failed ? 1 : 0
}

if (isMainThread) await main()
else if (workerData?.role === 'reader' && parentPort) reader(parentPort)
