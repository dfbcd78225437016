// Run as a child process by reliability.spec.ts for the cases that end in SIGBUS:
//   reliability-child.js sigbus-wp KIND STEP
// One userfaultfd with the SIGBUS feature and a region of KIND (2 pages) registered missing+wp, as
// the kernel's `sigbus-wp` case does; page 0 is populated write-protected (COPY_MODE_WP). With the
// SIGBUS feature the kernel sends no fault message at all, for missing and wp faults alike: the
// toucher gets SIGBUS (the kernel's case resolves both from its SIGBUS handler, which a Node
// process cannot do and resume). STEP:
//   write      a worker writes to the protected page 0: SIGBUS (a handler is installed and must
//              see nothing; if it got a wp fault it would unprotect and the worker would report)
//   unprotect  uffd.writeProtect(..., false) lifts the protection; the write lands with no signal;
//              then this thread reads the missing page 1: SIGBUS
// Each step prints a JSON line, synchronously; the parent checks them and the exit signal.
import { writeSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { type MemoryKind, Userfaultfd } from 'userfaultfd'
import { makeRegion, patternPage } from './harness'

function print(line: Record<string, unknown>): void {
  // Synchronous: the process is about to die of SIGBUS, a buffered line would be lost.
  writeSync(1, `${JSON.stringify(line)}\n`)
}

function sigbusWp(kind: MemoryKind, step: string): void {
  const uffd = new Userfaultfd({ features: ['SIGBUS'] })
  const region = makeRegion(kind, 2)
  const page = region.pageSize
  const ioctls = uffd.register(region, { missing: true, wp: true }).ioctls
  print({ step: 'registered', features: [...uffd.features].filter((f) => f === 'SIGBUS'), ioctls: [...ioctls].sort() })
  print({ step: 'populated', mapped: uffd.copy(region, 0, patternPage(0, page), { writeProtect: true }) })
  const bytes = new Uint8Array(region.buffer)
  print({ step: 'read protected', byte: bytes[5] })
  const faults: Array<{ kind: string; offset: number; write: boolean }> = []
  uffd.handle((fault) => {
    faults.push({ kind: fault.kind, offset: fault.offset, write: fault.write })
    if (fault.kind === 'wp') fault.unprotect()
  })
  uffd.on('error', (error) => print({ step: 'error', code: error.code, message: error.message }))
  if (step === 'write') {
    const worker = new Worker(
      `const { Region } = require('userfaultfd'); const { workerData, parentPort } = require('node:worker_threads');
       const bytes = new Uint8Array(Region.attach(workerData.shared).buffer);
       bytes[5] = 0x99;
       parentPort.postMessage({ after: bytes[5] })`,
      { eval: true, workerData: { shared: region.share() } },
    )
    const timer = setTimeout(() => {
      print({ step: 'hung', faults })
      process.exit(4)
    }, 15_000)
    worker.once('message', (result: { after: number }) => {
      clearTimeout(timer)
      print({ step: 'wrote', ...result, faults })
      process.exit(3)
    })
    return
  }
  uffd.writeProtect(region, 0, page, false)
  bytes[5] = 0x99
  print({ step: 'wrote', after: bytes[5], neighbour: bytes[100], faults })
  print({ step: 'read missing', byte: bytes[page + 1] })
  process.exit(3)
}

const [scenario, kind, step] = process.argv.slice(2)
if (
  scenario === 'sigbus-wp' &&
  (kind === 'anonymous' || kind === 'shmem' || kind === 'hugetlb') &&
  (step === 'write' || step === 'unprotect')
)
  sigbusWp(kind, step)
else {
  console.error(`unknown scenario ${process.argv.slice(2).join(' ')}`)
  process.exit(2)
}
