// A process whose main thread reads a page of an object source once the parent has made its store
// fail, with fallback 'sigbus': it ends by SIGBUS before any 'error' event can run, so what it
// printed on stderr is all that says why. Usage: node outage-child.js URL; prints `ready`, then
// reads when a line comes on stdin.
import { createInterface } from 'node:readline'
import { Region, Source, Userfaultfd } from 'userfaultfd'

async function main(): Promise<void> {
  const [url] = process.argv.slice(2) as [string]
  const source = await Source.objectStore(url, { chunkSize: 1 << 20, retry: { retries: 1, delayMs: 10 } })
  const uffd = new Userfaultfd({ fallback: 'sigbus' })
  const region = Region.anonymous(1 << 20)
  uffd.register(region, { source })
  const lines = createInterface({ input: process.stdin })
  lines.once('line', () => {
    const word = new Uint32Array(region.buffer)[4096]
    process.stdout.write(`read ${word}\n`)
    process.exit(0)
  })
  process.stdout.write('ready\n')
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
