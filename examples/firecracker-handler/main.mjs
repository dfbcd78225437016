// Firecracker handler: a page-fault handler for a Firecracker snapshot restore.
//
// Firecracker, started with `"mem_backend": { "backend_type": "Uffd", "backend_path": SOCKET }`,
// maps the guest memory, registers it with a userfaultfd and connects to SOCKET, where it sends a
// JSON array of { base_host_virt_addr, size, offset, page_size } (one entry per memory region) with
// the userfaultfd as SCM_RIGHTS. listen(SOCKET) takes that handshake; handler.mjs then serves each
// fault with the page of the snapshot memory file at the region's `offset` + the fault's offset.
//
// Usage:
//   node examples/firecracker-handler/main.mjs --socket PATH --snapshot FILE
//       serve one Firecracker restore until it exits
//   node examples/firecracker-handler/main.mjs [--small] [--pages N]
//       self-test: compile the test suite's C peer (__test__/helpers/peer.c) with cc, generate a
//       snapshot file, and serve the peer, which reads every page and counts wrong bytes
//       (--pages: pages the peer maps, default 1024; --small: 256)
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { listen } from 'userfaultfd'
import { serve } from './handler.mjs'

const { values: flags } = parseArgs({
  options: {
    socket: { type: 'string' },
    snapshot: { type: 'string' },
    pages: { type: 'string' },
    small: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
})
const usage = 'usage: node examples/firecracker-handler/main.mjs --socket PATH --snapshot FILE | [--small] [--pages N]'
if (flags.help) {
  console.log(usage)
  process.exit(0)
}
if ((flags.socket === undefined) !== (flags.snapshot === undefined)) {
  console.error(`--socket and --snapshot go together\n${usage}`)
  process.exit(2)
}

const failures = []
function fail(what) {
  failures.push(what)
  console.error(what)
}

function describe({ regions, offsets, peer }) {
  const who = peer ? `pid ${peer.pid} (uid ${peer.uid})` : 'an unknown peer'
  console.log(`handshake from ${who}: ${regions.length} region(s)`)
  for (const [i, region] of regions.entries()) {
    console.log(
      `  region ${i}: ${region.size} bytes at 0x${region.address.toString(16)}, pages of ${region.pageSize}, file offset ${offsets[i]}`,
    )
  }
}

function report(uffd, zeroed) {
  const { faults, resolutions, eexist, fallbacks } = uffd.stats
  console.log(
    `served:         ${faults.missing} faults: ${resolutions.copy} pages copied from the snapshot, ${zeroed} zeroed after a remove, ${eexist} EEXIST, ${fallbacks} fallbacks`,
  )
  if (fallbacks) fail(`${fallbacks} faults were resolved by the fallback`)
}

// Serve a real Firecracker: one restore, until it exits (or SIGINT/SIGTERM).
async function serveFirecracker(socketPath, snapshotPath) {
  if (!existsSync(snapshotPath)) {
    console.error(`no snapshot memory file at ${snapshotPath}`)
    process.exit(2)
  }
  const listener = listen(socketPath)
  console.log(`listening on ${socketPath}; start Firecracker with the Uffd memory backend at this path`)
  let served
  let stopping = false
  const stop = () => {
    console.log('stopping')
    stopping = true
    listener.close()
    served?.close()
    process.exitCode = failures.length ? 1 : 0
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  let adoption
  try {
    adoption = await listener.accept()
  } catch (error) {
    if (stopping) return // close() made the pending accept() reject
    console.error(`no handshake: ${error.code}: ${error.message}`)
    process.exitCode = 1
    return
  } finally {
    listener.close()
  }
  describe(adoption)
  served = serve(adoption, snapshotPath, (error) => fail(`error event: ${error.code}: ${error.message}`))
  await served.done
  if (stopping) return
  console.log('Firecracker hung up')
  report(adoption.uffd, served.zeroed())
  served.close()
  process.removeListener('SIGINT', stop)
  process.removeListener('SIGTERM', stop)
  if (failures.length) process.exitCode = 1
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
      fail(`could not compile ${source} with cc: ${error.stderr?.toString().trim() || error.message}`)
      return
    }
    console.log(`self-test: compiled ${source}; snapshot file of ${pages + 1} pages; the peer maps ${pages} pages`)

    const socketPath = join(dir, 'uffd.sock')
    const listener = listen(socketPath)
    const peer = spawn(peerBinary, [socketPath, 'serve', String(pages)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    peer.stdout.on('data', (chunk) => {
      output += chunk
    })
    peer.stderr.on('data', (chunk) => {
      output += chunk
    })
    const exited = once(peer, 'exit')

    // The handshake, unless the peer dies first (then nobody would ever connect).
    let adoption
    try {
      adoption = await Promise.race([
        listener.accept(),
        exited.then(([code]) => Promise.reject(new Error(`the peer exited with code ${code} before the handshake: ${output.trim()}`))),
      ])
    } catch (error) {
      fail(`no handshake: ${error.message}`)
      peer.kill()
      await exited
      return
    } finally {
      listener.close()
    }
    describe(adoption)
    if (adoption.peer?.pid !== peer.pid) fail(`the handshake came from pid ${adoption.peer?.pid}, not the peer's ${peer.pid}`)

    const served = serve(adoption, snapshot, (error) => fail(`error event: ${error.code}: ${error.message}`))
    const [code, signal] = await exited
    // The peer's exit closes the socket: the userfaultfd closes itself and says so.
    let timer
    const gone = await Promise.race([served.done.then(() => true), new Promise((resolve) => (timer = setTimeout(resolve, 2000, false)))])
    clearTimeout(timer)
    console.log(`peer:           ${output.trim()} (exit code ${code ?? signal})`)
    if (gone) console.log(`hang-up:        the userfaultfd closed itself (ERR_UFFD_PEER_GONE): ${adoption.uffd.closed}`)
    else fail('the peer exited but no ERR_UFFD_PEER_GONE arrived within 2 s')
    report(adoption.uffd, served.zeroed())
    if (adoption.uffd.stats.faults.missing !== pages)
      fail(`expected ${pages} faults, one per page, got ${adoption.uffd.stats.faults.missing}`)
    served.close()
    if (code !== 0 || !output.includes(`read ${pages} pages, 0 wrong bytes`)) fail('the peer read wrong bytes or failed')
    else console.log(`verified:       the peer checked ${pages * 5} bytes of ${pages} pages, 0 wrong`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (flags.socket !== undefined) {
  await serveFirecracker(flags.socket, flags.snapshot)
} else {
  const pages = Number(flags.pages ?? (flags.small ? 256 : 1024))
  if (!Number.isSafeInteger(pages) || pages < 1) {
    console.error(`--pages must be an integer >= 1, not ${JSON.stringify(flags.pages)}`)
    process.exit(2)
  }
  await selfTest(pages)
  if (failures.length) process.exitCode = 1
}
