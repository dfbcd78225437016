// Firecracker's handshake as its releases send it. The C peer sends the body of a release (1.12+:
// page_size and page_size_kib, both in bytes; 1.7-1.11: page_size_kib alone, in bytes; 1.0-1.6: no
// page size; the captured bodies are in fixtures/firecracker-handshakes.json) with its userfaultfd,
// then reads back every page: the handshake must be accepted, the regions must have the page size
// the peer mapped, and every byte the peer checks must be the snapshot file's.
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test, { type ExecutionContext } from 'ava'
import { type Adoption, listen, Source, type UffdError } from 'userfaultfd'
import { freeHugePages, HUGE_PAGE, patternPage, within } from './helpers/harness'
import { buildPeer, type PeerOptions, startPeer } from './helpers/peer'

const PAGE = 4096
const PAGES = 64
const HUGE_PAGES = 2
const dir = mkdtempSync(join(tmpdir(), 'uffd-firecracker-'))
const peerBinary = buildPeer(dir)

/** The snapshot file: 4 KiB page q holds the tests' pattern for page q; the peer's memory starts at its page 1. */
const snapshot = join(dir, 'snapshot')
writeFileSync(snapshot, patternPage(0, PAGE, (HUGE_PAGES * HUGE_PAGE) / PAGE + 1))

test.after.always(() => rmSync(dir, { recursive: true, force: true }))

/**
 * Starts the peer with a body form, takes its handshake, and checks who sent it. `hungUp` resolves
 * with the 'error' events of the userfaultfd once it has closed itself (the peer exited).
 */
async function handshake(t: ExecutionContext, name: string, pages: number, options: PeerOptions) {
  const socket = join(dir, `${name}.sock`)
  // As a Firecracker handler should: a fault nobody can serve is SIGBUS, never a zero page.
  const listener = listen(socket, { fallback: 'sigbus' })
  const peer = startPeer(peerBinary, socket, 'serve', pages, options)
  try {
    const adoption = await within(listener.accept(), 'the handshake')
    t.is(adoption.peer?.pid, peer.child.pid)
    const errors: UffdError[] = []
    adoption.uffd.on('error', (error) => errors.push(error))
    const closed = new Promise<void>((resolve) => adoption.uffd.on('close', resolve))
    const hungUp = within(closed, 'the hang-up').then(() => errors)
    return { adoption, peer, hungUp }
  } catch (error) {
    peer.child.kill('SIGKILL')
    throw new Error(`the handshake was refused: ${(error as Error).message}\npeer: ${(await peer.exit).out}`)
  } finally {
    listener.close()
  }
}

const codes = (errors: UffdError[]) => errors.map((error) => error.code)

/** Serves every fault with a page (of the region's page size) of the snapshot file, in JavaScript. */
function serveFromFile({ uffd, regions, offsets }: Adoption): () => void {
  const file = openSync(snapshot, 'r')
  uffd.handle((fault) => {
    const index = regions.indexOf(fault.region)
    const page = Buffer.alloc(fault.region.pageSize)
    readSync(file, page, 0, page.length, (offsets[index] ?? 0) + fault.offset)
    fault.copy(page)
  })
  return () => closeSync(file)
}

for (const [form, body] of [
  ['1.12+', 'page_size and page_size_kib, both 4096 bytes'],
  ['1.7-1.11', 'page_size_kib alone, 4096 bytes'],
  ['1.0-1.6', 'no page size, so the base page size'],
] as const) {
  test(`Firecracker ${form} handshake (${body}) is accepted with 4 KiB pages, and the peer reads back every page`, async (t) => {
    const { adoption, peer, hungUp } = await handshake(t, form, PAGES, { form })
    const { uffd, regions, offsets } = adoption
    t.is(regions.length, 1)
    t.is(regions[0]?.pageSize, PAGE, 'bytes in both fields: 4096 is 4 KiB, not 4 MiB')
    t.is(regions[0]?.size, PAGES * PAGE)
    t.deepEqual(offsets, [PAGE])
    const done = serveFromFile(adoption)
    const { code, out } = await peer.exit
    done()
    t.is(code, 0, out)
    t.regex(out, new RegExp(`read ${PAGES} pages, 0 wrong bytes`))
    t.is(uffd.stats.faults.missing, PAGES)
    t.is(uffd.stats.bytesMapped, PAGES * PAGE)
    t.deepEqual(codes(await hungUp), ['ERR_UFFD_PEER_GONE'], 'no fallback, only the hang-up')
  })
}

for (const form of ['1.12+', '1.7-1.11'] as const) {
  test(`a Firecracker ${form} handshake with a field no release sends yet is accepted, and its pages served`, async (t) => {
    const { adoption, peer, hungUp } = await handshake(t, `unknown-${form}`, PAGES, { form, unknown: true })
    t.is(adoption.regions[0]?.pageSize, PAGE)
    const done = serveFromFile(adoption)
    const { code, out } = await peer.exit
    done()
    t.is(code, 0, out)
    t.regex(out, new RegExp(`read ${PAGES} pages, 0 wrong bytes`))
    t.deepEqual(codes(await hungUp), ['ERR_UFFD_PEER_GONE'])
  })
}

const hugeSkip = freeHugePages() < HUGE_PAGES
test[hugeSkip ? 'skip' : 'serial'](
  `Firecracker 1.12+ handshake with 2 MiB huge pages gives regions of 2 MiB pages, and the peer reads back every page${hugeSkip ? ` (skipped: needs ${HUGE_PAGES} free 2 MiB huge pages, found ${freeHugePages()})` : ''}`,
  async (t) => {
    const { adoption, peer, hungUp } = await handshake(t, 'huge', HUGE_PAGES, { form: '1.12+', huge: true })
    t.is(adoption.regions[0]?.pageSize, HUGE_PAGE)
    t.is(adoption.regions[0]?.size, HUGE_PAGES * HUGE_PAGE)
    const done = serveFromFile(adoption)
    const { code, out } = await peer.exit
    done()
    t.is(code, 0, out)
    t.regex(out, new RegExp(`read ${HUGE_PAGES} pages, 0 wrong bytes`))
    t.is(adoption.uffd.stats.faults.missing, HUGE_PAGES)
    t.deepEqual(codes(await hungUp), ['ERR_UFFD_PEER_GONE'])
  },
)

test('an adopted region is served by a native file source: fromSource on each fault, the rest prefetched in the background', async (t) => {
  const { adoption, peer, hungUp } = await handshake(t, 'source', PAGES, { form: '1.12+' })
  const { uffd, regions, offsets } = adoption
  const [region] = regions
  if (!region) return t.fail('no region')
  const source = Source.file(snapshot, { offset: offsets[0] })
  uffd.handle((fault) => {
    fault.fromSource(source)
  })
  const prefetched = uffd.prefetch(region, undefined, { source }).catch((error: UffdError) => error)
  const { code, out } = await peer.exit
  t.is(code, 0, out)
  t.regex(out, new RegExp(`read ${PAGES} pages, 0 wrong bytes`))
  // Every page was mapped once: by a fault or by the prefetch, never twice, never zeros.
  t.is(uffd.stats.bytesMapped, PAGES * PAGE)
  // The peer exits as soon as it has read its last page. A fault it took on a page that the
  // prefetch then mapped may still be in the handler then: that late resolve finds the memory gone
  // (ESRCH) or the userfaultfd closed (EBADF), and says so; nothing else may go wrong.
  const errors = await hungUp
  t.is(errors.filter((error) => error.code === 'ERR_UFFD_PEER_GONE').length, 1)
  for (const error of errors.filter((error) => error.code !== 'ERR_UFFD_PEER_GONE')) {
    const cause = (error.cause as UffdError | undefined)?.code ?? ''
    t.true(['ESRCH', 'EBADF'].includes(cause), `${error.code}: ${error.message}`)
  }
  // The prefetch usually ends first; if the peer's exit cut it short, the kernel said so (ESRCH).
  const report = await within(prefetched, 'the prefetch')
  if (report instanceof Error) t.is(report.code, 'ESRCH')
  else t.true(report.mapped <= PAGES * PAGE && report.mapped + report.present <= PAGES * PAGE)
})
