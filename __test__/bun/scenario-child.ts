// Bun: run as a child process by handlers.test.ts, for what only a whole process shows.
//   bun scenario-child.ts SCENARIO
import { Region, Userfaultfd } from 'userfaultfd'

const PAGE = 4096
const scenario = process.argv[2]

if (scenario === 'forget-close-worker') {
  // handleInWorker, a read, and no close(): the script must end by itself.
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  await uffd.handleInWorker(new URL('./pager.ts', import.meta.url))
  console.log(JSON.stringify({ byte: new Uint8Array(region.buffer)[PAGE + 5] }))
} else if (scenario === 'exit-with-fault') {
  // A worker asleep in a fault that nothing serves (no handler, no time limit), then process.exit().
  const uffd = new Userfaultfd({ timeoutMs: 0 })
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  uffd.on('error', () => {})
  const worker = new Worker(new URL('./toucher.ts', import.meta.url).href)
  worker.postMessage({ shared: region.share(), offsets: [5] })
  await new Promise((resolve) => setTimeout(resolve, 300))
  console.log(JSON.stringify({ inFlight: uffd.stats.inFlight }))
  process.exit(0)
} else if (scenario === 'owner-no-handler') {
  // This thread touches registered memory with no handler: the fallback comes at once.
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const codes: string[] = []
  uffd.on('error', (error) => codes.push(error.code))
  const started = Date.now()
  const byte = new Uint8Array(region.buffer)[5]
  const ms = Date.now() - started
  await new Promise((resolve) => setTimeout(resolve, 100))
  console.log(JSON.stringify({ byte, ms, codes }))
  uffd.close()
}
