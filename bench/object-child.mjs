// One of the four processes of the object-store bench's shared-cache measurement: it reads every
// page of the object through a source with a cache directory and prints what it fetched.
// Usage: node bench/object-child.mjs URL ENDPOINT CACHE_DIR
import { Region, Source, Userfaultfd } from 'userfaultfd'

const [url, endpoint, cacheDir] = process.argv.slice(2)
const source = await Source.objectStore(url, { endpoint, anonymous: true, cacheDir, env: {} })
const uffd = new Userfaultfd()
const region = Region.anonymous(source.objectStats.size)
uffd.register(region, { source })
const bytes = new Uint8Array(region.buffer)
const started = performance.now()
let sum = 0
for (let at = 0; at < bytes.length; at += 4096) sum += bytes[at]
const ms = performance.now() - started
const { bytesFetched, diskHits, requests } = source.objectStats
console.log(JSON.stringify({ bytesFetched, diskHits, requests, ms, sum }))
uffd.close()
region.close()
