// A process of its own for the object-store tests' network parts, so that they keep answering
// while the test's main thread sleeps in a fault: `http FILE` serves FILE at /data.bin with Range,
// HEAD, ETag and If-Match like a static file server; `proxy HOST:PORT` forwards TCP to a store,
// delaying every request (so every answer) or resetting connections. It prints `{"port":N}`, then takes one JSON
// command per stdin line and answers each with one JSON line.
import { readFileSync } from 'node:fs'
import { createServer as createHttpServer } from 'node:http'
import { connect, createServer, type Socket } from 'node:net'
import { createInterface } from 'node:readline'

const [mode, arg] = process.argv.slice(2)
const counts = { requests: 0, ranges: 0, bytes: 0, failed: 0, resets: 0, connections: 0 }
const reply = (value: unknown) => process.stdout.write(`${JSON.stringify(value)}\n`)

let control: (command: Record<string, unknown>) => unknown = () => ({})

if (mode === 'http') {
  let data = readFileSync(arg as string)
  let version = 1
  let failNext = 0
  let failStatus = 503
  const server = createHttpServer((req, res) => {
    counts.requests++
    if (req.url !== '/data.bin') {
      res.writeHead(404).end('not found')
      return
    }
    if (failNext > 0) {
      failNext--
      counts.failed++
      res.writeHead(failStatus).end('injected failure')
      return
    }
    const etag = `"v${version}"`
    const ifMatch = req.headers['if-match']
    if (ifMatch && ifMatch !== etag) {
      res.writeHead(412).end('precondition failed')
      return
    }
    const headers: Record<string, string | number> = { etag, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...headers, 'content-length': data.length }).end()
      return
    }
    if (!range) {
      counts.bytes += data.length
      res.writeHead(200, { ...headers, 'content-length': data.length }).end(data)
      return
    }
    const start = Number(range[1])
    const end = Math.min(range[2] ? Number(range[2]) : data.length - 1, data.length - 1)
    if (start >= data.length) {
      res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end()
      return
    }
    counts.ranges++
    counts.bytes += end - start + 1
    res
      .writeHead(206, { ...headers, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${data.length}` })
      .end(data.subarray(start, end + 1))
  })
  server.keepAliveTimeout = 60_000
  server.listen(0, '127.0.0.1', () => reply({ port: (server.address() as { port: number }).port }))
  control = (command) => {
    if (typeof command.fail === 'number') {
      failNext = command.fail
      failStatus = typeof command.status === 'number' ? command.status : 503
    }
    if (typeof command.replace === 'string') {
      data = readFileSync(command.replace)
      version++
    }
    return { ...counts }
  }
} else if (mode === 'proxy') {
  const [host, port] = (arg as string).split(':')
  let delay = 0
  let resetEvery = 0
  let chunksIn = 0
  const server = createServer((client: Socket) => {
    counts.connections++
    const upstream = connect(Number(port), host as string)
    // Every request is held `delay` ms, in order, so every answer comes `delay` ms later: added
    // round trip, and the answers themselves flow at full speed.
    upstream.pipe(client)
    let last = 0
    client.on('data', (chunk) => {
      chunksIn++
      if (resetEvery > 0 && chunksIn % resetEvery === 0) {
        counts.resets++
        client.resetAndDestroy()
        upstream.destroy()
        return
      }
      if (delay === 0) return upstream.write(chunk)
      const at = Math.max(Date.now() + delay, last)
      last = at
      setTimeout(() => upstream.write(chunk), at - Date.now())
    })
    const end = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', end)
    upstream.on('error', end)
    client.on('close', end)
    upstream.on('close', end)
  })
  server.listen(0, '127.0.0.1', () => reply({ port: (server.address() as { port: number }).port }))
  control = (command) => {
    if (typeof command.delay === 'number') delay = command.delay
    if (typeof command.resetEvery === 'number') resetEvery = command.resetEvery
    return { ...counts }
  }
} else {
  process.stderr.write(`unknown mode ${mode}\n`)
  process.exit(2)
}

createInterface({ input: process.stdin }).on('line', (line) => reply(control(JSON.parse(line))))
process.stdin.on('end', () => process.exit(0))
