// Firecracker handler: a page-fault handler for a Firecracker snapshot restore.
//
// Firecracker, started with `"mem_backend": { "backend_type": "Uffd", "backend_path": SOCKET }`,
// maps the guest memory, registers it with a userfaultfd and connects to SOCKET, where it sends a
// JSON array of { base_host_virt_addr, size, offset, page_size, page_size_kib } (one entry per
// memory region; page sizes in bytes; older releases send only page_size_kib, or neither) with the
// userfaultfd as SCM_RIGHTS. listen(SOCKET) takes that handshake; handler.mjs serves each fault
// from the snapshot memory file at the region's `offset` + the fault's offset, with native code
// (uffd.serve: no JavaScript per fault), while a prefetch maps the rest of the guest memory in the background.
//
// The guest stays frozen until its faults are served, so a handler that gives up must not leave
// Firecracker hung: when it cannot serve the peer (the memory file is missing or too short, a
// fault could not be served) it kills the peer (its pid comes from SO_PEERCRED) with SIGKILL,
// says so, and exits 1. Faults nobody could serve are SIGBUS in the guest (fallback 'sigbus'),
// never zero pages. When the peer exits, the handler prints a one-line JSON summary and exits 0.
//
// Usage:
//   node examples/firecracker-handler/main.mjs --socket PATH --mem FILE [--connect-timeout-ms N] [--js]
//       serve one Firecracker restore until it exits (--snapshot FILE is the same as --mem FILE;
//       --connect-timeout-ms: give up if no peer connects in time, default 60000; --js: read
//       and copy each page in JavaScript instead of the native source and prefetch)
//   node examples/firecracker-handler/main.mjs [--small] [--pages N] [--js]
//       self-test: compile the test suite's C peer (__test__/helpers/peer.c) with cc, generate a
//       snapshot file, and serve the peer, which sends the handshake of current Firecracker and
//       reads every page and counts wrong bytes (--pages: pages the peer maps, default 1024;
//       --small: 256)
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { listen } from 'userfaultfd'
import { installHandler } from './handler.mjs'

const { values: flags } = parseArgs({
  options: {
    socket: { type: 'string' },
    mem: { type: 'string' },
    snapshot: { type: 'string' },
    'connect-timeout-ms': { type: 'string', default: '60000' },
    js: { type: 'boolean', default: false },
    pages: { type: 'string' },
    small: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
const usage =
  'usage: node examples/firecracker-handler/main.mjs --socket PATH --mem FILE [--connect-timeout-ms N] [--js] | [--small] [--pages N] [--js]'
if (flags.help) {
  console.log(usage)
  process.exit(0)
}
const memPath = flags.mem ?? flags.snapshot
if ((flags.socket === undefined) !== (memPath === undefined)) {
  console.error(`--socket and --mem go together\n${usage}`)
  process.exit(2)
}
const connectTimeoutMs = Number(flags['connect-timeout-ms'])
if (!Number.isSafeInteger(connectTimeoutMs) || connectTimeoutMs < 1) {
  console.error(`--connect-timeout-ms must be an integer >= 1, not ${JSON.stringify(flags['connect-timeout-ms'])}`)
  process.exit(2)
}

/** How the adopted userfaultfd behaves: a fault nobody could serve is SIGBUS, never a zero page in a VM. */
const ADOPT_OPTIONS = { fallback: 'sigbus' }

function describe({ regions, offsets, peer }) {
  const who = peer ? `pid ${peer.pid} (uid ${peer.uid})` : 'an unknown peer'
  console.log(`handshake from ${who}: ${regions.length} region(s)`)
  for (const [i, region] of regions.entries()) {
    console.log(
      `  region ${i}: ${region.size} bytes at 0x${region.address.toString(16)}, pages of ${region.pageSize}, file offset ${offsets[i]}`,
    )
  }
}

/** Kills a peer this handler cannot serve, so that it does not stay frozen, and says so. */
function killPeer(peer, why) {
  if (!peer) {
    console.error(`cannot serve the peer: ${why}; its pid is not known: stop it yourself`)
    return
  }
  try {
    process.kill(peer.pid, 'SIGKILL')
    console.error(`cannot serve the peer: ${why}; killed it (pid ${peer.pid}) with SIGKILL`)
  } catch (error) {
    console.error(`cannot serve the peer: ${why}; could not kill pid ${peer.pid}: ${error.code}`)
  }
}

/**
 * Waits for one handshake on `listener`, at most `ms`, or until `signal` aborts; then stops
 * listening. Resolves with { adoption }, { error } (a refused handshake), { timeout } or { aborted }.
 */
async function acceptOne(listener, ms, signal) {
  const pending = listener.accept().then(
    (adoption) => ({ adoption }),
    (error) => ({ error }),
  )
  let timer
  const gaveUp = new Promise((resolve) => {
    timer = setTimeout(resolve, ms, { timeout: ms })
    if (signal?.aborted) resolve({ aborted: signal.reason })
    signal?.addEventListener('abort', () => resolve({ aborted: signal.reason }), { once: true })
  })
  const outcome = await Promise.race([pending, gaveUp])
  clearTimeout(timer)
  listener.close()
  if (!('adoption' in outcome) && !('error' in outcome)) {
    // A handshake that completes just as the handler gives up must not leave its peer frozen.
    void pending.then(({ adoption }) => {
      if (!adoption) return
      killPeer(adoption.peer, 'it connected after the handler gave up')
      adoption.uffd.close()
    })
  }
  return outcome
}

/**
 * Maps every region from its source in the background, one region at a time (one thread of
 * libuv's pool), until `signal` aborts; `onMapped` gets the bytes each region's prefetch mapped.
 */
async function prefetchAll({ uffd, regions }, sources, signal, onMapped) {
  for (const [i, region] of regions.entries()) {
    if (signal.aborted || uffd.closed) break
    try {
      onMapped((await uffd.prefetch(region, undefined, { source: sources[i], signal })).mapped)
    } catch (error) {
      // The faults are still served one by one; a peer that exits mid-prefetch makes this ESRCH.
      if (!uffd.closed && error.code !== 'ESRCH') console.error(`prefetch of region ${i} stopped: ${error.code}: ${error.message}`)
      break
    }
  }
}

/**
 * Serves an adoption from the open memory file `fd` until the peer hangs up (resolves with the
 * summary) or a fault could not be served (kills the peer; resolves with undefined).
 */
function serveUntilHangUp(adoption, fd, { js }) {
  const { uffd, peer } = adoption
  const prefetching = new AbortController()
  let prefetched = 0
  return new Promise((resolve) => {
    let settled = false
    const settle = (summary) => {
      if (settled) return
      settled = true
      prefetching.abort()
      resolve(summary)
    }
    uffd.on('error', (error) => {
      if (settled) return
      if (error.code === 'ERR_UFFD_PEER_GONE') {
        const { faults, bytesMapped } = uffd.stats
        settle({
          peer: 'gone',
          pid: peer?.pid,
          faults: faults.missing + faults.minor + faults.wp,
          bytesMapped,
          prefetchedBytes: prefetched,
          handlerRss: process.memoryUsage().rss,
        })
        return
      }
      // A resolve that the peer's exit cut short (its memory is gone: ESRCH; the userfaultfd
      // closed on its hang-up: EBADF) is no failure to serve: ERR_UFFD_PEER_GONE follows.
      if (['ESRCH', 'EBADF'].includes(error.cause?.code ?? error.code)) return
      // With fallback 'sigbus' the guest has taken a SIGBUS already; it cannot go on.
      const cause = error.cause ? ` (${error.cause.code ?? error.cause.name}: ${error.cause.message})` : ''
      killPeer(peer, `a fault could not be served: ${error.code}: ${error.message}${cause}`)
      uffd.close()
      settle(undefined)
    })
    let sources
    try {
      sources = installHandler(adoption, fd, { js })
    } catch (error) {
      killPeer(peer, `no handler: ${error.code ?? error.name}: ${error.message}`)
      uffd.close()
      settle(undefined)
      return
    }
    // Pages a balloon gave back are zeros from then on: leave the rest to the faults.
    uffd.on('remove', () => prefetching.abort())
    if (sources.length) {
      void prefetchAll(adoption, sources, prefetching.signal, (mapped) => {
        prefetched += mapped
      })
    }
  })
}

/**
 * Serves one peer: waits for its handshake on `listener`, checks the memory file against its
 * regions, and serves its faults until it hangs up. Resolves with { code, adoption, summary }:
 * code 0 when the peer hung up after being served, 1 when it could not be served.
 */
async function serveOne(listener, memPath, { connectTimeoutMs, js, signal }) {
  const outcome = await acceptOne(listener, connectTimeoutMs, signal)
  if ('timeout' in outcome) {
    console.error(`no peer connected within ${connectTimeoutMs} ms (--connect-timeout-ms): giving up`)
    return { code: 1 }
  }
  if ('aborted' in outcome) {
    console.error(`no handshake: ${outcome.aborted?.message ?? outcome.aborted}`)
    return { code: 1 }
  }
  if ('error' in outcome) {
    const { code, message, peer } = outcome.error
    // The refusal names who sent it (SO_PEERCRED): a Firecracker left waiting would hang.
    killPeer(peer, `the handshake was refused (${code}: ${message})`)
    return { code: 1 }
  }
  const { adoption } = outcome
  describe(adoption)
  const giveUp = (why) => {
    killPeer(adoption.peer, why)
    adoption.uffd.close()
    return { code: 1, adoption }
  }
  let fd
  try {
    fd = openSync(memPath, 'r')
  } catch (error) {
    return giveUp(`cannot open the memory file ${memPath} (${error.code})`)
  }
  try {
    const needed = Math.max(...adoption.regions.map((region, i) => adoption.offsets[i] + region.size))
    const { size } = fstatSync(fd)
    if (size < needed) return giveUp(`the memory file ${memPath} has ${size} bytes; the regions need ${needed}`)
    const summary = await serveUntilHangUp(adoption, fd, { js })
    if (!summary) return { code: 1, adoption }
    console.log(JSON.stringify(summary))
    return { code: 0, adoption, summary }
  } finally {
    closeSync(fd)
  }
}

// Serve a real Firecracker: one restore, until it exits.
async function serveFirecracker(socketPath) {
  // Listen before anything else: Firecracker connects as soon as it loads the snapshot.
  let listener
  try {
    listener = listen(socketPath, ADOPT_OPTIONS)
  } catch (error) {
    console.error(`cannot listen on ${socketPath}: ${error.code}: ${error.message}`)
    return 2
  }
  console.log(`listening on ${socketPath}; start Firecracker with the Uffd memory backend at this path`)
  const stop = (signal) => {
    console.error(`stopped by ${signal}; a peer being served is left as it is`)
    process.exit(1)
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  const { code } = await serveOne(listener, memPath, { connectTimeoutMs, js: flags.js })
  process.removeListener('SIGINT', stop)
  process.removeListener('SIGTERM', stop)
  return code
}

// The snapshot file of the self-test: byte i of file page q is (q * 31 + i * 7 + 1) & 0xff.
function writeSnapshot(path, pages, pageSize) {
  const page = Buffer.alloc(pageSize)
  const fd = openSync(path, 'w')
  try {
    for (let q = 0; q < pages; q++) {
      for (let i = 0; i < pageSize; i++) page[i] = (q * 31 + i * 7 + 1) & 0xff
      writeSync(fd, page)
    }
  } finally {
    closeSync(fd)
  }
}

async function selfTest(pages) {
  const PAGE = 4096 // the peer's page size
  const failures = []
  const fail = (what) => failures.push(what)
  const dir = mkdtempSync(join(tmpdir(), 'uffd-firecracker-'))
  try {
    // The peer maps PAGES pages and says its memory starts at file offset 4096: file page p + 1
    // backs its page p, so the file holds PAGES + 1 pages.
    const snapshot = join(dir, 'snapshot.mem')
    writeSnapshot(snapshot, pages + 1, PAGE)
    const source = fileURLToPath(new URL('../../__test__/helpers/peer.c', import.meta.url))
    const peerBinary = join(dir, 'peer')
    try {
      execFileSync('cc', ['-O2', '-o', peerBinary, source], { stdio: ['ignore', 'ignore', 'pipe'] })
    } catch (error) {
      return [`could not compile ${source} with cc: ${error.stderr?.toString().trim() || error.message}`]
    }
    console.log(`self-test: compiled ${source}; snapshot file of ${pages + 1} pages; the peer maps ${pages} pages`)

    const socketPath = join(dir, 'uffd.sock')
    const listener = listen(socketPath, ADOPT_OPTIONS)
    // The peer sends the body of Firecracker 1.12+ (page_size and page_size_kib, in bytes).
    const peer = spawn(peerBinary, [socketPath, 'serve', String(pages), '1.12+'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    peer.stdout.on('data', (chunk) => {
      output += chunk
    })
    peer.stderr.on('data', (chunk) => {
      output += chunk
    })
    const exited = once(peer, 'close')
    // A peer that dies before its handshake would never connect: stop waiting then.
    const peerDied = new AbortController()
    void exited.then(([code, signal]) =>
      peerDied.abort(new Error(`the peer exited (${code ?? signal}) before the handshake: ${output.trim()}`)),
    )
    const served = serveOne(listener, snapshot, { connectTimeoutMs, js: flags.js, signal: peerDied.signal })
    const [code, signal] = await exited
    // The peer's exit closes the socket: the userfaultfd closes itself and says so, at once.
    const result = await Promise.race([served, sleep(2000).then(() => undefined)])
    console.log(`peer:           ${output.trim()} (exit code ${code ?? signal})`)
    if (!result) return [...failures, 'the peer exited but no ERR_UFFD_PEER_GONE arrived within 2 s']
    const { adoption, summary } = result
    if (adoption && adoption.peer?.pid !== peer.pid) fail(`the handshake came from pid ${adoption.peer?.pid}, not the peer's ${peer.pid}`)
    if (!summary) return [...failures, 'the peer was not served']
    console.log(
      `served:         ${summary.faults} faults, ${summary.bytesMapped} bytes mapped (${summary.prefetchedBytes} by the prefetch)`,
    )
    if (summary.bytesMapped !== pages * PAGE) fail(`expected ${pages * PAGE} bytes mapped, each page once, got ${summary.bytesMapped}`)
    if (code !== 0 || !output.includes(`read ${pages} pages, 0 wrong bytes`)) fail('the peer read wrong bytes or failed')
    else console.log(`verified:       the peer checked ${pages * 5} bytes of ${pages} pages, 0 wrong`)
    return failures
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (flags.socket !== undefined) {
  process.exitCode = await serveFirecracker(flags.socket)
} else {
  const pages = Number(flags.pages ?? (flags.small ? 256 : 1024))
  if (!Number.isSafeInteger(pages) || pages < 1) {
    console.error(`--pages must be an integer >= 1, not ${JSON.stringify(flags.pages)}`)
    process.exit(2)
  }
  const failures = await selfTest(pages)
  for (const failure of failures) console.error(`failed: ${failure}`)
  process.exitCode = failures.length ? 1 : 0
}
