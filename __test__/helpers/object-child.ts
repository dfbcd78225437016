// One of the processes of the shared-cache test: opens an object source with a cache directory,
// reads every page on its main thread, and prints what it fetched and whether every byte was right.
// Usage: node object-child.js URL ENDPOINT CACHE_DIR SIZE SEED
import { Region, Source, Userfaultfd } from 'userfaultfd'
import { census } from './object-data'

async function main(): Promise<void> {
  const [url, endpoint, cacheDir, size, seed] = process.argv.slice(2) as [string, string, string, string, string]
  const source = await Source.objectStore(url, { endpoint, anonymous: true, cacheDir, chunkSize: 1 << 20, env: {} })
  const uffd = new Userfaultfd()
  const region = Region.anonymous(Number(size))
  uffd.register(region, { source })
  const seen = census(region, Number(size), [Number(seed)])
  const stats = source.objectStats
  process.stdout.write(JSON.stringify({ fetched: stats?.bytesFetched, diskHits: stats?.diskHits, wrong: seen.wrong + seen.zero }))
  uffd.close()
  region.close()
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
