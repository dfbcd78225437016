#!/usr/bin/env node
// `npm run stress -- --mem anon|shmem|hugetlb --mib N --bounces N --seconds N [--json]`
//
// In the manner of the kernel's uffd-stress: per CPU a locking thread takes a lock that lives in a
// page of registered memory (so the fault happens while taking the lock), increments that page's
// counter and a verify copy outside the region. Between bounces the main thread pauses them, saves
// every page, and discards the region, so every page is missing again and is served back by the
// handler from the saved copy (one locker walks pages at random, the other in sequence); now and
// then a second resolver maps the faulting page first, so that the fault's own COPY meets EEXIST. At the end every counter must
// match its verify copy.
import { cpus } from 'node:os'
import { parseArgs } from 'node:util'
import { Worker } from 'node:worker_threads'
import { Region, Userfaultfd } from 'userfaultfd'

const { values } = parseArgs({
  options: {
    mem: { type: 'string', default: 'anon' },
    mib: { type: 'string', default: '16' },
    bounces: { type: 'string', default: '8' },
    seconds: { type: 'string', default: '10' },
    json: { type: 'boolean', default: false },
  },
})
const mib = Number(values.mib)
const bounces = Number(values.bounces)
const seconds = Number(values.seconds)
const size = mib * 1024 * 1024
const region = values.mem === 'shmem' ? Region.shmem(size) : values.mem === 'hugetlb' ? Region.hugetlb(size) : Region.anonymous(size)
const page = region.pageSize
const pages = region.size / page
const uffd = new Userfaultfd({ timeoutMs: 0 })
uffd.register(region)
const errors = []
uffd.on('error', (error) => errors.push(`${error.code}: ${error.message}`))

// The saved content of every page (what the handler serves), and the verify counters.
const saved = new Uint8Array(region.size)
const verify = new Int32Array(new SharedArrayBuffer(pages * 4))
// control[0]: 0 run, 1 pause, 2 stop; control[1]: threads paused. operations[0]: increments done.
const control = new Int32Array(new SharedArrayBuffer(16))
const operations = new BigInt64Array(new SharedArrayBuffer(8))
// Pages mapped since the last bounce: only these may be read here (this thread is the handler's,
// so touching a missing page would be a self-fault).
const present = new Set()
let duplicateCopies = 0
uffd.handle((fault) => {
  const at = fault.offset
  const bytes = saved.subarray(at, at + page)
  // Now and then a second resolver maps the page first: the fault's own COPY then meets EEXIST.
  if (Math.random() < 0.05) {
    uffd.copy(region, at, bytes)
    duplicateCopies++
  }
  fault.copy(bytes)
  present.add(at)
})

let exited = 0
const lockers = Array.from({ length: cpus().length }, (_, index) => {
  const worker = new Worker(new URL('./stress-locker.mjs', import.meta.url), {
    workerData: { shared: region.share(), verify, control, operations, pages, page, index },
  })
  worker.on('error', (error) => errors.push(`locker ${index}: ${error.message}`))
  worker.on('exit', () => exited++)
  return worker
})

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
async function pauseLockers() {
  Atomics.store(control, 0, 1)
  while (Atomics.load(control, 1) < lockers.length - exited) await sleep(1)
}
function resumeLockers() {
  Atomics.store(control, 1, 0)
  Atomics.store(control, 0, 0)
  Atomics.notify(control, 0)
}

const started = Date.now()
let done = 0
for (let bounce = 0; bounce < bounces; bounce++) {
  await sleep((seconds * 1000) / bounces)
  await pauseLockers()
  // Save the pages mapped since the last bounce, then drop them all: every page is missing again.
  const view = new Uint8Array(region.buffer)
  for (const at of present) saved.set(view.subarray(at, at + page), at)
  present.clear()
  region.discard(0, region.size)
  done++
  resumeLockers()
}
await pauseLockers()
Atomics.store(control, 0, 2)
Atomics.notify(control, 0)
while (exited < lockers.length) await sleep(1)

// Check every counter against its verify copy: in the region where the page is mapped, else saved.
const mapped = new Int32Array(region.buffer)
const kept = new Int32Array(saved.buffer)
let mismatches = 0
for (let p = 0; p < pages; p++) {
  const counter = present.has(p * page) ? mapped[(p * page) / 4 + 1] : kept[(p * page) / 4 + 1]
  if (counter !== verify[p]) mismatches++
}
const stats = uffd.stats
const result = {
  mem: values.mem,
  mib,
  bounces: done,
  seconds: (Date.now() - started) / 1000,
  operations: Number(Atomics.load(operations, 0)),
  faults: stats.faults.missing,
  copies: stats.resolutions.copy,
  eexist: stats.eexist,
  duplicateCopies,
  duplicates: stats.duplicates,
  mismatches,
  errors,
}
uffd.close()
region.close()
console.log(values.json ? JSON.stringify(result) : result)
process.exitCode = mismatches === 0 && errors.length === 0 ? 0 : 1
