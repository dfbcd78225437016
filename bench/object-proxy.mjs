// A TCP proxy for the object-store bench, in its own process: it forwards to a store and holds
// every request `delay` ms, so every answer comes that much later (added round trip; the answers
// flow through a pipe at full speed). It prints its port;
// each stdin line `delay N` sets the delay and is answered with `ok`.
// Usage: node bench/object-proxy.mjs HOST:PORT
import { connect, createServer } from 'node:net'
import { createInterface } from 'node:readline'

const [host, port] = process.argv[2].split(':')
let delay = 0
const server = createServer((client) => {
  const upstream = connect(Number(port), host)
  upstream.pipe(client)
  let last = 0
  client.on('data', (chunk) => {
    if (delay === 0) return upstream.write(chunk)
    const at = Math.max(Date.now() + delay, last)
    last = at
    setTimeout(() => upstream.write(chunk), at - Date.now())
  })
  const end = () => {
    client.destroy()
    upstream.destroy()
  }
  for (const socket of [client, upstream]) socket.on('error', end).on('close', end)
})
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })))
createInterface({ input: process.stdin }).on('line', (line) => {
  delay = Number(line.split(' ')[1]) || 0
  console.log('ok')
})
process.stdin.on('end', () => process.exit(0))
