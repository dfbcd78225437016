// Run as a child process by exit.spec.ts and remote-serving.spec.ts (helpers/scenario.ts), for what only a whole process shows: whether it ends
// by itself, how fast process.exit() returns, what it prints as warnings.
//   scenario-child.js SCENARIO [ARG]
// Each scenario prints JSON lines (synchronously) that the parent reads.
import { readSync, writeSync } from 'node:fs'
import { extname, join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { listen, Region, Userfaultfd } from 'userfaultfd'
import { patternPage } from './harness'

const PAGE = 4096

function print(line: Record<string, unknown>): void {
  writeSync(1, `${JSON.stringify(line)}\n`)
}

/** A worker thread that reads byte `offset` of the region and posts it; it ends after. */
function readInWorker(region: Region, offset: number): Worker {
  return new Worker(
    `const { Region } = require('userfaultfd'); const { workerData, parentPort } = require('node:worker_threads');
     const region = Region.attach(workerData.shared);
     parentPort.postMessage(new Uint8Array(region.buffer)[workerData.offset]);`,
    { eval: true, workerData: { shared: region.share(), offset } },
  )
}

// .js under ava (the compiled helpers), .ts under Bun (which runs this file as it is).
const pager = join(__dirname, `pager${extname(__filename)}`)

async function main(scenario: string, arg: string | undefined): Promise<void> {
  switch (scenario) {
    case 'forget-close-worker': {
      // handleInWorker, a read, and no close(): the script must end by itself.
      const uffd = new Userfaultfd()
      const region = Region.anonymous(4 * PAGE)
      uffd.register(region)
      await uffd.handleInWorker(pager, { workerData: { mode: 'copy' } })
      print({ byte: new Uint8Array(region.buffer)[PAGE + 5] })
      return
    }
    case 'forget-close-direct': {
      // A direct reader on this thread serves a worker's read; no close(): the script must end.
      const uffd = new Userfaultfd()
      const region = Region.anonymous(4 * PAGE)
      uffd.register(region)
      uffd.handle((fault) => void fault.copy(patternPage(fault.offset, PAGE)), { direct: true })
      const worker = readInWorker(region, PAGE + 5)
      worker.once('message', (byte) => print({ byte }))
      return
    }
    case 'exit-with-fault':
    case 'end-with-fault': {
      // A worker asleep in a fault that nothing serves (no handler, no time limit).
      const uffd = new Userfaultfd({ timeoutMs: 0 })
      const region = Region.anonymous(4 * PAGE)
      uffd.register(region)
      uffd.on('error', () => {})
      const worker = readInWorker(region, 5)
      await new Promise((resolve) => setTimeout(resolve, 300))
      print({ inFlight: uffd.stats.inFlight })
      if (scenario === 'exit-with-fault') process.exit(0)
      worker.unref() // the end of the script, with the worker still asleep
      return
    }
    case 'owner-no-handler': {
      // This thread touches registered memory with no handler: it alone could install one.
      const uffd = new Userfaultfd()
      const region = Region.anonymous(4 * PAGE)
      uffd.register(region)
      const codes: string[] = []
      uffd.on('error', (error) => codes.push(error.code))
      const started = Date.now()
      const byte = new Uint8Array(region.buffer)[5]
      print({ byte, ms: Date.now() - started })
      await new Promise((resolve) => setTimeout(resolve, 100))
      print({ codes, fallbacks: uffd.stats.fallbacks })
      uffd.close()
      return
    }
    case 'owner-no-handler-then-close':
    case 'owner-no-handler-then-end': {
      // The same, and the script ends at once: the word must not be lost with the process.
      const uffd = new Userfaultfd()
      const region = Region.anonymous(4 * PAGE)
      uffd.register(region)
      const codes: string[] = []
      if (scenario.endsWith('close')) uffd.on('error', (error) => codes.push(error.code))
      const byte = new Uint8Array(region.buffer)[5]
      if (scenario.endsWith('close')) uffd.close()
      print({ byte, codes })
      return
    }
    case 'owner-after-rejected-worker': {
      // The handler worker fails to start while this thread sleeps in a fault waiting for it.
      const uffd = new Userfaultfd()
      const region = Region.anonymous(4 * PAGE)
      uffd.register(region)
      const codes: string[] = []
      uffd.on('error', (error) => codes.push(error.code))
      const starting = uffd.handleInWorker(arg ?? '/nonexistent/pager.mjs')
      starting.catch((error) => print({ rejected: error.code }))
      const started = Date.now()
      const byte = new Uint8Array(region.buffer)[5]
      print({ byte, ms: Date.now() - started })
      await new Promise((resolve) => setTimeout(resolve, 100))
      print({ codes })
      uffd.close()
      return
    }
    case 'warning-cause': {
      // A handler that throws, and no 'error' listener: the printed warning names the cause.
      const uffd = new Userfaultfd()
      const region = Region.anonymous(4 * PAGE)
      uffd.register(region)
      uffd.handle(() => {
        throw new Error('the handler broke: cause-7731')
      })
      const worker = readInWorker(region, 5)
      worker.once('message', (byte) => {
        print({ byte })
        uffd.close()
      })
      return
    }
    case 'open-default': {
      // Opened with the defaults (run unprivileged by the parent).
      const uffd = new Userfaultfd()
      print({ userModeOnly: uffd.userModeOnly })
      uffd.close()
      return
    }
    case 'serve-peer': {
      // The README's snippet for another process's memory, as written: no keepAlive, no close().
      const [socket, snapshot] = String(arg).split(',') as [string, string]
      const listener = listen(socket)
      print({ listening: true })
      const { uffd, regions, offsets } = await listener.accept()
      listener.close()
      const { openSync } = await import('node:fs')
      const file = openSync(snapshot, 'r')
      const page = Buffer.alloc(PAGE)
      uffd.on('error', (error) => print({ error: error.code }))
      uffd.handle((fault) => {
        const start = (offsets[regions.indexOf(fault.region)] ?? 0) + fault.offset
        readSync(file, page, 0, PAGE, start)
        fault.copy(page)
      })
      uffd.on('close', () => print({ closed: true, copies: uffd.stats.resolutions.copy }))
      return
    }
    case 'serve-peer-in-worker': {
      // The same, served by a handler worker: the peer's hang-up must reach this thread, which
      // closes, so that the process ends.
      const [socket, snapshot] = String(arg).split(',') as [string, string]
      const listener = listen(socket)
      print({ listening: true })
      const { uffd, regions, offsets } = await listener.accept()
      listener.close()
      uffd.on('error', (error) => print({ error: error.code }))
      uffd.on('close', () => print({ closed: true, copies: uffd.stats.resolutions.copy }))
      const workerData = { snapshot, offsets: regions.map((region, i) => [region.id, offsets[i] ?? 0]) }
      await uffd.handleInWorker(join(__dirname, `snapshot-pager${extname(__filename)}`), { workerData })
      return
    }
    default:
      throw new Error(`unknown scenario ${scenario}`)
  }
}

main(String(process.argv[2]), process.argv[3]).catch((error) => {
  print({ failed: String(error) })
  process.exitCode = 1
})
