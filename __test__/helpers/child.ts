// Run as a child process by the tests that end in a signal or need another user: the first
// argument names the scenario. It prints what it saw; the parent checks the exit signal and output.
import { Worker } from 'node:worker_threads'
import { Region, Userfaultfd } from 'userfaultfd'

const PAGE = 4096

/** Reads one byte of the region at `offset` from a worker thread (a fault from another thread). */
function readInWorker(region: Region, offset: number): void {
  const worker = new Worker(
    `const { Region } = require('userfaultfd'); const { workerData } = require('node:worker_threads');
     const r = Region.attach(workerData.shared); console.log('read', new Uint8Array(r.buffer)[workerData.offset])`,
    { eval: true, workerData: { shared: region.share(), offset } },
  )
  worker.on('exit', () => {
    console.log('the worker exited: no SIGBUS')
    process.exit(3)
  })
}

const scenarios: Record<string, () => void> = {
  // fallback 'sigbus': a handler that returns without resolving poisons the page.
  'fallback-sigbus'() {
    const uffd = new Userfaultfd({ fallback: 'sigbus' })
    const region = Region.anonymous(2 * PAGE)
    uffd.register(region)
    uffd.on('error', () => {})
    uffd.handle(() => {
      console.log('handler returned without resolving')
    })
    readInWorker(region, PAGE)
  },
  // fault.poison(): the handler poisons the page on purpose.
  'fault-poison'() {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(2 * PAGE)
    uffd.register(region)
    uffd.handle((fault) => {
      console.log('poisoned', fault.poison())
    })
    readInWorker(region, PAGE)
  },
  // uffd.poison() outside a fault: a later read of the page raises SIGBUS, with no handler at all.
  'range-poison'() {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(2 * PAGE)
    uffd.register(region)
    console.log('poisoned', uffd.poison(region, PAGE, PAGE))
    console.log('page 0 still served:', uffd.copy(region, 0, new Uint8Array(PAGE).fill(1)), new Uint8Array(region.buffer)[0])
    console.log('read', new Uint8Array(region.buffer)[PAGE])
  },
  // The SIGBUS feature: no fault message at all, the toucher gets SIGBUS.
  'sigbus-feature'() {
    const uffd = new Userfaultfd({ features: ['SIGBUS'] })
    const region = Region.anonymous(2 * PAGE)
    uffd.register(region)
    console.log('features', [...uffd.features].includes('SIGBUS'))
    console.log('read', new Uint8Array(region.buffer)[PAGE])
  },
  // As an unprivileged user: by default user-mode-only; asking for kernel faults is refused.
  unprivileged() {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(PAGE)
    uffd.register(region)
    console.log(JSON.stringify({ userModeOnly: uffd.userModeOnly, copied: uffd.copy(region, 0, new Uint8Array(PAGE).fill(5)) }))
    uffd.close()
    try {
      new Userfaultfd({ features: ['EVENT_FORK'] })
      console.log(JSON.stringify({ forkRefused: false }))
    } catch (error) {
      const { code, message } = error as { code: string; message: string }
      console.log(JSON.stringify({ forkRefused: true, code, message }))
    }
    try {
      new Userfaultfd({ userModeOnly: false })
      console.log(JSON.stringify({ refused: false }))
    } catch (error) {
      const { code, syscall, message } = error as { code: string; syscall: string; message: string }
      console.log(JSON.stringify({ refused: true, code, syscall, message }))
    }
  },
}

const scenario = scenarios[process.argv[2] ?? '']
if (!scenario) {
  console.error(`unknown scenario ${process.argv[2]}`)
  process.exit(2)
}
scenario()
