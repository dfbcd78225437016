#!/usr/bin/env node
// The `userfaultfd` command. `userfaultfd firecracker --socket PATH --mem FILE [options]` serves
// Firecracker snapshot restores (see serveFirecracker), printing a JSON line per event.
import { parseArgs } from 'node:util'
import { serveFirecracker } from './firecracker'
import { DEFAULTS } from './options'
import { activatedSocket } from './remote'

const USAGE = `usage: userfaultfd firecracker --socket PATH --mem FILE [--mem DIFF ...] [options]

Serves Firecracker snapshot restores on the Unix socket PATH (the load request's
mem_backend.backend_path), each VM from its memory file (repeat --mem for layers, base first).
Started by systemd with a socket (ListenStream=), --socket may be left out.

  --socket-mode MODE       the socket file's mode, octal (660 lets its group connect)
  --socket-owner USER[:GROUP]  the socket file's owner (a jailed Firecracker's user)
  --record FILE            write each restore's working-set trace to FILE when its VM exits
  --replay FILE            map the trace's pages first, in order, as soon as a VM connects
  --handshake-timeout-ms N drop a connection that has not sent its handshake within N ms
                           (default 5000); the server keeps listening whether or not a VM comes
  --timeout-ms N           a fault not served within N ms is SIGBUS in the guest (default ${DEFAULTS.timeoutMs})
  --no-prefetch            do not map the rest of the memory in the background
  --once                   exit after the first VM's restore ends

Prints one JSON line per event, each with its time and level: listening, connect, summary (per
VM), error. SIGUSR1 prints the summaries of the VMs being served; SIGINT or SIGTERM stops
listening.`

function main(argv: string[]): void {
  const [command, ...rest] = argv
  if (command !== 'firecracker') {
    console.error(USAGE)
    process.exit(command === undefined || command === '--help' || command === '-h' ? 0 : 2)
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      socket: { type: 'string' },
      'socket-mode': { type: 'string' },
      'socket-owner': { type: 'string' },
      mem: { type: 'string', multiple: true },
      record: { type: 'string' },
      replay: { type: 'string' },
      'handshake-timeout-ms': { type: 'string', default: '5000' },
      'timeout-ms': { type: 'string', default: String(DEFAULTS.timeoutMs) },
      'no-prefetch': { type: 'boolean', default: false },
      once: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) {
    console.log(USAGE)
    return
  }
  const number = (name: string, text: string | undefined): number => {
    const value = Number(text)
    if (!Number.isSafeInteger(value) || value < 0) {
      console.error(`--${name} must be a whole number of milliseconds, not ${JSON.stringify(text)}\n\n${USAGE}`)
      process.exit(2)
    }
    return value
  }
  // Without --socket, the socket systemd passed (socket activation), if it did.
  const socket = values.socket ?? activatedSocket()
  if (socket === undefined || !values.mem?.length) {
    console.error(`--socket (or systemd's socket activation) and --mem are required\n\n${USAGE}`)
    process.exit(2)
  }
  // Every line says when (ISO 8601) and how grave: info, warn (a connection dropped that sent nothing), error.
  const print = (
    line: Record<string, unknown>,
    level = line.event === 'error' || line.outcome === 'killed' || line.outcome === 'exited' ? 'error' : 'info',
  ) => process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level, ...line })}\n`)
  let server: ReturnType<typeof serveFirecracker>
  try {
    server = serveFirecracker({
      socket,
      memoryFile: values.mem,
      handshakeTimeoutMs: number('handshake-timeout-ms', values['handshake-timeout-ms']),
      timeoutMs: number('timeout-ms', values['timeout-ms']),
      prefetch: !values['no-prefetch'],
      ...(values['socket-mode'] ? { socketMode: values['socket-mode'] } : {}),
      ...(values['socket-owner'] ? { socketOwner: values['socket-owner'] } : {}),
      ...(values.record ? { record: values.record } : {}),
      ...(values.replay ? { replay: values.replay } : {}),
    })
  } catch (error) {
    // A missing memory file, a trace of another file: said as the other events are.
    const { code, message } = error as { code?: string; message: string }
    print({ event: 'error', code: code ?? 'EINVAL', message })
    process.exit(1)
  }
  let failed = false
  print({ event: 'listening', socket })
  server.on('connect', (peer) => print({ event: 'connect', pid: peer?.pid }))
  server.on('error', (error) => {
    const dropped = error.syscall === 'handshake' && error.peer === undefined
    if (!dropped) failed = true
    print({ event: 'error', code: error.code, message: error.message }, dropped ? 'warn' : 'error')
  })
  server.on('summary', (summary) => {
    if (summary.outcome === 'killed' || summary.outcome === 'exited') failed = true
    print({ event: 'summary', ...summary })
    if (values.once) server.close()
  })
  server.on('close', () => process.exit(failed ? 1 : 0))
  process.on('SIGUSR1', () => {
    for (const summary of server.running()) print({ event: 'summary', ...summary })
  })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => server.close())
}

try {
  main(process.argv.slice(2))
} catch (error) {
  console.error(`userfaultfd: ${(error as Error).message}`)
  process.exit(1)
}
