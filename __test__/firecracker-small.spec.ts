// The restore server's smaller findings (issue 18): a readahead window or a prefetch chunk that
// crosses into a range the VM unmapped, the counters of a VM that exits while its prefetch runs.
// The stand-in VM keeps its userfaultfd and asks for no EVENT_UNMAP, as Firecracker does: the
// server is not told of an unmap.
import { readdirSync } from 'node:fs'
import test from 'ava'
import { serveFirecracker } from 'userfaultfd'
import { errorsOf, nextSummary, vmKit } from './helpers/vm'

const kit = vmKit('uffd-fc-small-')
test.after.always(() => kit.remove())

for (const prefetch of [false, true]) {
  test(`a ${prefetch ? 'prefetch chunk' : 'readahead window'} that crosses into a range the VM unmapped maps the pages still mapped; the VM is served, every byte right`, async (t) => {
    const pages = 256
    const mem = kit.memoryFile(`unmapped-${prefetch}.mem`, pages)
    const socket = kit.socketPath()
    // Sequential faults from page 0 grow the window 16, 32, 64: the one at page 48 would reach past 100.
    const server = serveFirecracker({ socket, memoryFile: mem, prefetch })
    t.teardown(() => server.close())
    const errors = errorsOf(server)
    const served = nextSummary(server, 30_000)
    const { code, signal, out } = await kit.startPeer(socket, mem, pages, ['--unmap', '100:8']).exit
    t.deepEqual([code, signal], [0, null], out)
    t.regex(out, /"pages":248,"wrong":0/)
    const summary = await served
    t.is(summary.outcome, 'served', summary.error)
    t.deepEqual(
      errors.map((e) => e.message),
      [],
    )
    t.is(summary.pagesMapped, pages - 8, 'every page still mapped, and none of the unmapped')
  })
}

test('a VM that exits while its prefetch runs: the summary counts the pages the prefetch mapped', async (t) => {
  const regions = 4
  const pages = 8192 // 32 MiB a region, each prefetched 512 pages at a time
  const mem = kit.memoryFile('exits.mem', regions * pages)
  const socket = kit.socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const served = nextSummary(server, 30_000)
  // It touches nothing, and exits as soon as the prefetch's first chunk of region 0 is there.
  const vm = kit.startPeer(socket, mem, pages, ['--regions', String(regions), '--exit-when-present', '511'])
  const { code, out } = await vm.exit
  t.is(code, 0, out)
  const summary = await served
  t.is(summary.outcome, 'served', summary.error)
  t.deepEqual(
    errors.map((e) => e.message),
    [],
  )
  t.is(summary.faults, 0)
  t.true(summary.pagesMapped >= 512 && summary.pagesMapped < regions * pages, `exited while the prefetch ran: ${JSON.stringify(summary)}`)
  t.is(summary.prefetchedPages, summary.pagesMapped, `every page mapped was the prefetch’s: ${JSON.stringify(summary)}`)
})

test('a VM of many regions leaves no descriptor open after it ends: its regions share the memory file’s', async (t) => {
  const regions = 2000
  const mem = kit.memoryFile('regions.mem', regions)
  const socket = kit.socketPath()
  const server = serveFirecracker({ socket, memoryFile: mem, prefetch: false })
  t.teardown(() => server.close())
  const errors = errorsOf(server)
  const open = () => readdirSync('/proc/self/fd').length
  const before = open()
  const served = nextSummary(server, 60_000)
  // It touches its memory at once: a fault before its region is served waits for it.
  const vm = kit.startPeer(socket, mem, 1, ['--regions', String(regions)])
  const { code, signal, out } = await vm.exit
  const summary = await served
  t.deepEqual([code, signal], [0, null], `${out} ${JSON.stringify(summary)}`)
  t.regex(out, /"pages":2000,"wrong":0/)
  t.is(summary.outcome, 'served')
  t.deepEqual(
    errors.map((e) => e.message),
    [],
  )
  // A descriptor a region held until the garbage collector came would be 2,000 here.
  t.true(open() - before < 50, `${open() - before} descriptors more than before the VM`)
})
