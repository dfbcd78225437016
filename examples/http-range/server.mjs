// The HTTP server, in its own worker thread: it serves the generated buffer with Range requests on
// 127.0.0.1 (an ephemeral port). It runs off the main thread so that the main thread may read the
// memory too: a thread reading a missing page sleeps until the page is fetched from this server.
import { createServer } from 'node:http'
import { parentPort, workerData } from 'node:worker_threads'

const { data, latencyMs } = workerData
const bytes = new Uint8Array(data)
let requests = 0
let bytesServed = 0

const server = createServer((req, res) => {
  const match = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
  if (req.method !== 'GET' || !match) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('a GET with one Range: bytes=a-b\n')
    return
  }
  const start = Number(match[1])
  const end = Math.min(match[2] === '' ? bytes.length - 1 : Number(match[2]), bytes.length - 1)
  if (start > end) {
    res.writeHead(416, { 'content-range': `bytes */${bytes.length}` }).end()
    return
  }
  // A little latency, as from a real server, so that the faults of several readers overlap.
  setTimeout(() => {
    requests++
    bytesServed += end - start + 1
    res.writeHead(206, {
      'content-type': 'application/octet-stream',
      'content-length': end - start + 1,
      'content-range': `bytes ${start}-${end}/${bytes.length}`,
    })
    res.end(bytes.subarray(start, end + 1))
  }, latencyMs)
})

parentPort.on('message', (message) => {
  if (message === 'stats') parentPort.postMessage({ type: 'stats', requests, bytesServed })
  else if (message === 'close') {
    server.closeAllConnections()
    server.close(() => parentPort.close())
  }
})

server.listen(0, '127.0.0.1', () => {
  parentPort.postMessage({ type: 'listening', port: server.address().port })
})
