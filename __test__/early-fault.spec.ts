// A VM runs as soon as it has sent its handshake: its first faults may come before its regions
// are served. Such a fault waits for serve() (or handle()), unsaid, up to timeoutMs; then the
// fallback, said once. The stand-in VM keeps its userfaultfd after sending it, as Firecracker does.
import test from 'ava'
import { listen, Source, type UffdError } from 'userfaultfd'
import { until, within } from './helpers/harness'
import { vmKit } from './helpers/vm'

const PAGES = 16
const REGIONS = 4
const kit = vmKit('uffd-early-fault-')
test.after.always(() => kit.remove())

/** What the adopted userfaultfd says, but the peer's hang-up at its end. */
function errorsOf(uffd: { on(event: 'error', listener: (error: UffdError) => void): unknown }): UffdError[] {
  const errors: UffdError[] = []
  uffd.on('error', (error) => {
    if (error.code !== 'ERR_UFFD_PEER_GONE') errors.push(error)
  })
  return errors
}

test('a fault before its region is served waits for serve(), unsaid: the VM reads every byte right and nothing is reported', async (t) => {
  const mem = kit.memoryFile('early.mem', PAGES * REGIONS)
  const socket = kit.socketPath()
  const listener = listen(socket)
  t.teardown(() => listener.close())
  // No delay: the VM touches its memory (region 0 first) right after the handshake.
  const vm = kit.startPeer(socket, mem, PAGES, ['--regions', String(REGIONS)])
  const { uffd, regions, offsets } = await within(listener.accept(), 'the handshake')
  t.teardown(() => uffd.close())
  const errors = errorsOf(uffd)
  await until(() => uffd.stats.faults.missing > 0, 'the VM’s first fault')
  // The server is slow to set up (it awaits something else first): the event loop turns meanwhile.
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.is(uffd.stats.queued, 1, 'the fault waits')
  regions.forEach((region, i) => {
    uffd.serve(region, { source: Source.file(mem, { offset: offsets[i] ?? 0 }) })
  })
  const { code, out } = await vm.exit
  t.is(code, 0, out)
  t.regex(out, new RegExp(`"pages":${PAGES * REGIONS},"wrong":0`))
  t.deepEqual(
    errors.map((e) => `${e.code} ${e.message}`),
    [],
    'a fault on a region not served yet is no trouble',
  )
})

test('a fault on a region that is never served gets the fallback at timeoutMs (SIGBUS for a VM), said once', async (t) => {
  const mem = kit.memoryFile('never.mem', PAGES * REGIONS)
  const socket = kit.socketPath()
  const listener = listen(socket, { timeoutMs: 500 })
  t.teardown(() => listener.close())
  const vm = kit.startPeer(socket, mem, PAGES, ['--regions', String(REGIONS)])
  const { uffd, regions, offsets } = await within(listener.accept(), 'the handshake')
  t.teardown(() => uffd.close())
  const errors = errorsOf(uffd)
  // Every region but the first: the VM's first fault, in region 0, waits for good but for timeoutMs.
  regions.slice(1).forEach((region, i) => {
    uffd.serve(region, { source: Source.file(mem, { offset: offsets[i + 1] ?? 0 }) })
  })
  const { signal, out } = await vm.exit
  t.is(signal, 'SIGBUS', `the fallback of an adoption is SIGBUS: ${out}`)
  await until(() => errors.length > 0, 'the timeout said')
  t.deepEqual(
    errors.map((e) => e.code),
    ['ERR_UFFD_TIMEOUT'],
    errors.map((e) => e.message).join('\n'),
  )
  t.regex(errors[0]?.message ?? '', /no handler was installed and no source served a missing fault at offset 0 .* within 500 ms/)
})

test('serve({ sourceOffset }): one source serves every region of a VM, each from its own place in the memory file; a source with no offsets refuses one', async (t) => {
  const mem = kit.memoryFile('shared.mem', PAGES * REGIONS)
  const socket = kit.socketPath()
  const listener = listen(socket)
  t.teardown(() => listener.close())
  const vm = kit.startPeer(socket, mem, PAGES, ['--regions', String(REGIONS), '--delay-ms', '300'])
  const { uffd, regions, offsets } = await within(listener.accept(), 'the handshake')
  t.teardown(() => uffd.close())
  const first = regions[0]
  if (!first) throw new Error('no region')
  t.throws(() => uffd.serve(first, { source: Source.zero(), sourceOffset: 4096 }), {
    message: /sourceOffset: the zero source has no offsets/,
  })
  const source = Source.file(mem)
  regions.forEach((region, i) => {
    uffd.serve(region, { source, sourceOffset: offsets[i] ?? 0 })
  })
  const { code, out } = await vm.exit
  t.is(code, 0, out)
  t.regex(out, new RegExp(`"pages":${PAGES * REGIONS},"wrong":0`))
})
