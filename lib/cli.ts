#!/usr/bin/env node
// The `userfaultfd` command. `userfaultfd firecracker --socket PATH --mem FILE [options]` serves
// Firecracker snapshot restores (see serveFirecracker), printing a JSON line per event.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { checkMemoryFiles, serveFirecracker } from './firecracker'
import { DEFAULT_KEEPER_GRACE_MS, runKeeper } from './keeper'
import { DEFAULTS } from './options'
import { activatedSocket } from './remote'
import { OBJECT_URL, snapshotMain } from './snapshot-cli'
import { Source } from './source'
import { commandLineParseError, nearest } from './validate'

const COMMANDS = ['firecracker', 'keeper', 'snapshot'] as const

const USAGE = `usage: userfaultfd <command> [options]

Commands:
  firecracker   serve Firecracker snapshot restores (userfaultfd firecracker --help)
  keeper        hold the VMs of a server across its restarts (userfaultfd keeper --help)
  snapshot      push a memory file to an object store (userfaultfd snapshot --help)

Options:
  -h, --help     this text
  -v, --version  the package's version`

const FIRECRACKER_USAGE = `usage: userfaultfd firecracker --socket PATH --mem FILE [--mem DIFF ...] [options]
       userfaultfd firecracker --socket PATH --mem s3://BUCKET/KEY [--mem DIFF...] [options]
       userfaultfd firecracker --socket PATH --mem az://CONTAINER/BLOB --account NAME [options]

Serves Firecracker snapshot restores on the Unix socket PATH (the load request's
mem_backend.backend_path), each VM from its memory file (repeat --mem for layers, base first),
or from an object in a store (s3://, az://, http(s)://: a plain object or a pushed snapshot; its
credentials from AWS_*, or as the AWS SDKs find them with --credential-chain), with local diff
files above it if more --mem follow. Started by
systemd with a socket (ListenStream=), --socket may be left out.

  --endpoint URL           the store's endpoint (default for s3:// AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL;
                           for az:// AZURE_STORAGE_ENDPOINT)
  --anonymous              unsigned requests (a public bucket)
  --credential-chain       look for credentials as the AWS SDKs do (profiles, web identity,
                           container endpoints)
  --account NAME           for az://: the storage account (default AZURE_STORAGE_ACCOUNT_NAME; its
                           key from AZURE_STORAGE_ACCOUNT_KEY, or AZURE_STORAGE_SAS_TOKEN)
  --cache-dir DIR          a chunk cache on disk, shared by the servers of this machine

  --socket-mode MODE       the socket file's mode, octal (660 lets its group connect)
  --socket-owner USER[:GROUP]  the socket file's owner (a jailed Firecracker's user)
  --record FILE            write each restore's working-set trace to FILE when its VM exits
  --replay FILE            map the trace's pages first, in order, as soon as a VM connects
  --working-set FILE       replay FILE while it is a trace of this memory; while it is not (the
                           first restore, or the snapshot changed), record it: the first VM to
                           exit served writes it for the restores after (not with --record, --replay)
  --working-set-beside     the same, the trace kept beside the memory: with --mem s3://BUCKET/KEY
                           as the object KEY.working-set.json in the store (any host restoring
                           that snapshot replays it), else as FILE.working-set.json
  --handshake-timeout-ms N drop a connection that has not sent its handshake within N ms
                           (default ${DEFAULTS.firecrackerHandshakeTimeoutMs}); the server keeps listening whether or not a VM comes
  --timeout-ms N           a fault not served within N ms is SIGBUS in the guest (default ${DEFAULTS.timeoutMs})
  --no-prefetch            do not map the rest of the memory in the background
  --once                   exit after the first VM's restore ends
  --keeper PATH            hand each VM to a keeper at the Unix socket PATH (started if none
                           listens there), so that the VMs survive this server: started again
                           with the same --keeper, a server takes back every VM held and wakes
                           its faults. With a keeper, SIGTERM hands over: the server exits at
                           once and the keeper holds the VMs for the next one.
  --keeper-grace-ms N      a keeper this server starts kills its VMs after N ms with no server
                           (default ${DEFAULT_KEEPER_GRACE_MS})

Prints one JSON line per event, each with its time and level: listening, connect, summary (per
VM), keeper (linked, with the VMs it held), resume (each VM taken back), trace (a working set
written), error. SIGUSR1 prints the summaries of the VMs
being served; SIGINT or SIGTERM stops listening and serves the VMs to their end (SIGTERM with a
keeper hands over instead).`

const KEEPER_USAGE = `usage: userfaultfd keeper --socket PATH [--grace-ms N]

Holds the VMs a Firecracker server hands it (userfaultfd firecracker --keeper PATH), so that
they survive the server: a server started again takes them back. A server starts a keeper
itself; run one yourself to keep it out of the server's service (systemd stops a service's
every process). Ends when it has neither VM nor server, or has had no server for N ms
(default ${DEFAULT_KEEPER_GRACE_MS}): then it kills the VMs it holds rather than leave them frozen.`

/** The version in the package's package.json (dist/lib/cli.js is two folders below it). */
function version(): string {
  return (JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version
}

/** Says what is wrong on stderr, with the usage, and exits 2 (a usage error). */
function usageError(problem: string, usage: string): never {
  console.error(`userfaultfd: ${problem}\n\n${usage}`)
  process.exit(2)
}

function main(argv: string[]): void {
  const [command, ...rest] = argv
  if (command === '--help' || command === '-h' || command === 'help') {
    console.log(USAGE)
    return
  }
  if (command === '--version' || command === '-v') {
    console.log(version())
    return
  }
  if (command === undefined) usageError('no command given', USAGE)
  if (command === 'keeper') {
    keeperMain(rest)
    return
  }
  if (command === 'snapshot') {
    void snapshotMain(rest).then((code) => process.exit(code))
    return
  }
  if (command !== 'firecracker') {
    const near = nearest(command, COMMANDS)
    usageError(`unknown command '${command}'${near ? ` (did you mean '${near}'?)` : ''}`, USAGE)
  }
  const values = firecrackerArgs(rest)
  if (values.help) {
    console.log(FIRECRACKER_USAGE)
    return
  }
  void firecrackerMain(values)
}

/** The firecracker command's options (parseArgs throws on one it does not know). */
function firecrackerArgs(rest: string[]) {
  return parseArgs({
    args: rest,
    options: {
      socket: { type: 'string' },
      'socket-mode': { type: 'string' },
      'socket-owner': { type: 'string' },
      mem: { type: 'string', multiple: true },
      record: { type: 'string' },
      replay: { type: 'string' },
      'working-set': { type: 'string' },
      'working-set-beside': { type: 'boolean', default: false },
      'handshake-timeout-ms': { type: 'string' },
      'timeout-ms': { type: 'string', default: String(DEFAULTS.timeoutMs) },
      'no-prefetch': { type: 'boolean', default: false },
      once: { type: 'boolean', default: false },
      keeper: { type: 'string' },
      'keeper-grace-ms': { type: 'string' },
      endpoint: { type: 'string' },
      anonymous: { type: 'boolean', default: false },
      'credential-chain': { type: 'boolean', default: false },
      account: { type: 'string' },
      'cache-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }).values
}

async function firecrackerMain(values: ReturnType<typeof firecrackerArgs>): Promise<void> {
  const number = (name: string, text: string | undefined): number => {
    const value = Number(text)
    if (!Number.isSafeInteger(value) || value < 0) {
      usageError(`--${name} must be a whole number of milliseconds, not ${JSON.stringify(text)}`, FIRECRACKER_USAGE)
    }
    return value
  }
  // Without --socket, the socket systemd passed (socket activation), if it did.
  const socket = values.socket ?? activatedSocket()
  if (socket === undefined || !values.mem?.length) {
    usageError("--socket (or systemd's socket activation) and --mem are required", FIRECRACKER_USAGE)
  }
  if (values['working-set'] && values['working-set-beside']) {
    usageError('--working-set FILE and --working-set-beside name two places for one trace: give one', FIRECRACKER_USAGE)
  }
  // Every line says when (ISO 8601) and how grave: info, warn (a connection dropped that sent nothing), error.
  const print = (
    line: Record<string, unknown>,
    level = line.event === 'error' || line.outcome === 'killed' || line.outcome === 'exited' || line.outcome === 'abandoned'
      ? 'error'
      : 'info',
  ) => process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level, ...line })}\n`)
  let server: ReturnType<typeof serveFirecracker>
  try {
    const memory = await memoryOf(values)
    server = serveFirecracker({
      socket,
      ...(memory ? { memory } : { memoryFile: values.mem }),
      ...(values['handshake-timeout-ms'] ? { handshakeTimeoutMs: number('handshake-timeout-ms', values['handshake-timeout-ms']) } : {}),
      timeoutMs: number('timeout-ms', values['timeout-ms']),
      // Left unsaid, a recording restore runs without the prefetch (its trace would miss pages).
      ...(values['no-prefetch'] ? { prefetch: false } : {}),
      ...(values['socket-mode'] ? { socketMode: values['socket-mode'] } : {}),
      ...(values['socket-owner'] ? { socketOwner: values['socket-owner'] } : {}),
      ...(values.record ? { record: values.record } : {}),
      ...(values.replay ? { replay: values.replay } : {}),
      ...(values['working-set'] ? { workingSet: values['working-set'] } : {}),
      ...(values['working-set-beside'] ? { workingSet: true as const } : {}),
      ...(values.keeper ? { keeper: values.keeper } : {}),
      ...(values['keeper-grace-ms'] ? { keeperGraceMs: number('keeper-grace-ms', values['keeper-grace-ms']) } : {}),
    })
  } catch (error) {
    const { code, message, commandLineMessage } = error as { code?: string; message: string; commandLineMessage?: string }
    // A bad option value (--socket-mode 999) is a usage error, as an unknown option is.
    if (code === 'ERR_INVALID_ARG_TYPE' || code === 'ERR_OUT_OF_RANGE' || code === 'ERR_INVALID_ARG_VALUE') {
      usageError(message, FIRECRACKER_USAGE)
    }
    // A missing memory file, a trace of another file: said as the other events are.
    print({ event: 'error', code: code ?? 'EINVAL', message: commandLineMessage ?? message })
    process.exit(1)
  }
  let failed = false
  print({ event: 'listening', socket })
  server.on('connect', (peer) => print({ event: 'connect', pid: peer?.pid }))
  server.on('resume', (peer) => print({ event: 'resume', pid: peer?.pid }))
  server.on('trace', ({ path, pages }) => print({ event: 'trace', path, pages }))
  server.on('keeper', ({ path, vms }) => print({ event: 'keeper', keeper: path, vms }))
  server.on('error', (error) => {
    // A connection dropped that sent nothing, a stale trace replaced: said, not failures.
    const warning = (error.syscall === 'handshake' && error.peer === undefined) || error.code === 'ERR_UFFD_TRACE_STALE'
    if (!warning) failed = true
    print({ event: 'error', code: error.code, message: error.message }, warning ? 'warn' : 'error')
  })
  const collect = garbageCollector()
  server.on('summary', (summary) => {
    if (summary.outcome !== 'served') failed = true
    print({ event: 'summary', ...summary })
    if (values.once) server.close()
    // A VM of thousands of regions leaves thousands of objects: collected now, the server's memory
    // stays flat from one such VM to the next (V8 alone lets it grow for a while first).
    // (Once the restore's last references have gone: after this event, and its userfaultfd's close.)
    if (summary.regions >= MANY_REGIONS && collect) setTimeout(collect, 100).unref()
  })
  server.on('close', () => process.exit(failed ? 1 : 0))
  process.on('SIGUSR1', () => {
    for (const summary of server.running()) print({ event: 'summary', ...summary })
  })
  process.on('SIGINT', () => server.close())
  process.on('SIGTERM', () => {
    if (!values.keeper) return server.close()
    // The keeper holds every VM this server took: the next server started takes them back.
    print({ event: 'handover', keeper: values.keeper, vms: server.running().length })
    process.exit(0)
  })
}

/** Regions of a VM past which the command collects garbage when the VM ends. */
const MANY_REGIONS = 1000

/**
 * V8's collector, for this process the command owns (a library never forces one on its host).
 * Undefined if the runtime will not give it (Bun, say).
 */
function garbageCollector(): (() => void) | undefined {
  try {
    setFlagsFromString('--expose-gc')
    const gc: unknown = runInNewContext('gc')
    return typeof gc === 'function' ? () => gc() : undefined
  } catch {
    return undefined
  }
}

/**
 * The memory when `--mem` names an object in a store (`s3://bucket/key`, `http(s)://...`): opened
 * now (its HEAD), so that a missing object is said before the server listens.
 */
async function memoryOf(values: ReturnType<typeof firecrackerArgs>): Promise<Source | undefined> {
  const mem = values.mem ?? []
  const foreign = mem.find((m) => /^[a-z][a-z0-9+.-]*:\/\//i.test(m) && !OBJECT_URL.test(m))
  if (foreign !== undefined) {
    usageError(
      `--mem ${foreign} names a store this package does not read: use s3://, az:// or http(s)://, or a local path`,
      FIRECRACKER_USAGE,
    )
  }
  const urls = mem.filter((m) => OBJECT_URL.test(m))
  if (urls.length === 0) {
    for (const name of ['endpoint', 'cache-dir', 'account'] as const) {
      if (values[name] !== undefined) usageError(`--${name} is for a --mem in a store (s3://, az://, https://)`, FIRECRACKER_USAGE)
    }
    return undefined
  }
  if (urls.length > 1 || mem[0] !== urls[0]) {
    usageError('only the first --mem (the base) may be in a store: the layers above it are local files', FIRECRACKER_USAGE)
  }
  if (values.account !== undefined && !/^az(ure)?:\/\//.test(urls[0] as string)) {
    usageError('--account is for a --mem in Azure (az://container/blob)', FIRECRACKER_USAGE)
  }
  // The layers above the store, checked as local memory files are, before any request.
  checkMemoryFiles(mem.slice(1))
  const object = await Source.objectStore(urls[0] as string, {
    ...(values.endpoint ? { endpoint: values.endpoint } : {}),
    ...(values['cache-dir'] ? { cacheDir: values['cache-dir'] } : {}),
    ...(values.account ? { account: values.account } : {}),
    anonymous: values.anonymous,
    credentialChain: values['credential-chain'],
  })
  return mem.length > 1 ? Source.layers([object, ...mem.slice(1)]) : object
}

function keeperMain(args: string[]): void {
  const { values } = parseArgs({
    args,
    options: {
      socket: { type: 'string' },
      'grace-ms': { type: 'string', default: String(DEFAULT_KEEPER_GRACE_MS) },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) {
    console.log(KEEPER_USAGE)
    return
  }
  const grace = Number(values['grace-ms'])
  if (!Number.isSafeInteger(grace) || grace < 1 || grace > 2 ** 31 - 1) {
    usageError(`--grace-ms must be a whole number of milliseconds, not ${JSON.stringify(values['grace-ms'])}`, KEEPER_USAGE)
  }
  if (!values.socket) usageError('--socket is required', KEEPER_USAGE)
  runKeeper(values.socket, grace)
}

try {
  main(process.argv.slice(2))
} catch (error) {
  // An option parseArgs does not know, or a missing value, is a usage error like an unknown command.
  const { code, message } = error as { code?: string; message: string }
  const usage = process.argv[2] === 'keeper' ? KEEPER_USAGE : FIRECRACKER_USAGE
  if (code?.startsWith('ERR_PARSE_ARGS_')) usageError(commandLineParseError({ code, message }, usage), usage)
  console.error(`userfaultfd: ${message}`)
  process.exit(1)
}
