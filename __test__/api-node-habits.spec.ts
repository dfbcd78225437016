// What a Node developer expects of a long-lived handle, and trips on when it is not so: 'close'
// on the next tick, `closed` that says what close() did, handlers that can be removed, and
// `{ signal }` on everything that waits.
import test from 'ava'
import { Region, Userfaultfd } from 'userfaultfd'
import { patternByte, patternPage, within, withReader } from './helpers/harness'

const PAGE = 4096

test("'close' is emitted on the next tick, once, as Node's handles do", async (t) => {
  const uffd = new Userfaultfd()
  const order: string[] = []
  uffd.on('close', () => order.push('close'))
  uffd.close()
  uffd.close()
  order.push('close() returned')
  t.deepEqual(order, ['close() returned'], 'not inside close()')
  t.true(uffd.closed, 'closed at once all the same')
  await new Promise<void>((resolve) => setImmediate(resolve))
  t.deepEqual(order, ['close() returned', 'close'])
})

test('closed is true after close() on a handle from Userfaultfd.attach; the owner stays open and serves', async (t) => {
  const uffd = new Userfaultfd()
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const attached = Userfaultfd.attach(uffd.share())
  t.false(attached.closed)
  attached.close()
  t.true(attached.closed)
  t.false(uffd.closed, 'the fd is the owner’s')
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE))
  })
  await withReader([uffd, region], async (reader) => {
    t.deepEqual((await reader.read(region, { offsets: [PAGE + 5] })).bytes, [patternByte(PAGE, PAGE, 5)])
  })
  t.true(uffd.closed)
  await within(new Promise((resolve) => setImmediate(resolve)), 'a tick')
})
