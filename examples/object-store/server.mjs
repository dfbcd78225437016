// A plain HTTP server of Range requests for the example when no SeaweedFS is at hand: it serves one
// file at /model.bin (HEAD, Range, ETag, If-Match) from its own process, and prints its port.
// Usage: node server.mjs FILE
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'

const data = readFileSync(process.argv[2])
const etag = `"${data.length.toString(16)}-1"`
const server = createServer((req, res) => {
  if (req.url !== '/model.bin') return res.writeHead(404).end()
  if (req.headers['if-match'] && req.headers['if-match'] !== etag) return res.writeHead(412).end()
  const headers = { etag, 'accept-ranges': 'bytes' }
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
  if (req.method === 'HEAD' || !range)
    return res.writeHead(200, { ...headers, 'content-length': data.length }).end(req.method === 'HEAD' ? undefined : data)
  const start = Number(range[1])
  const end = Math.min(range[2] ? Number(range[2]) : data.length - 1, data.length - 1)
  res
    .writeHead(206, { ...headers, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${data.length}` })
    .end(data.subarray(start, end + 1))
})
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })))
process.stdin.on('end', () => process.exit(0)).resume()
