// Regions and their views across threads, and their buffers on every runtime: the cases both
// runtimes run are in cases/regions.ts (Bun runs them in bun/region-views.test.ts); here, Node.js's
// own: every buffer a region hands out is marked untransferable where Node.js can still detach it
// (the test watches node:worker_threads' markAsUntransferable, which the package calls on Node.js).

import test from 'ava'
import { Region } from 'userfaultfd'
import { avaCases } from './cases/ava'
import { regionCases } from './cases/regions'

const PAGE = 4096

const GiB = 2 ** 30

// The module object the package calls markAsUntransferable on, to watch the calls.
const workerThreads = require('node:worker_threads') as { markAsUntransferable: (object: object) => void }

// Node.js 24 and later keep the mark as a detach key that napi cannot pass: there a marked buffer
// could not be detached by close(), so the package marks none (and the runtime refuses to transfer
// an external buffer all the same).
function markKeepsDetach(): boolean {
  const probe = new ArrayBuffer(1) as ArrayBuffer & { transfer?: () => ArrayBuffer }
  workerThreads.markAsUntransferable(probe)
  try {
    probe.transfer?.()
    return true
  } catch {
    return false
  }
}

test('every ArrayBuffer a region hands out is marked untransferable where the runtime can still detach it', (t) => {
  const expectMark = markKeepsDetach()
  if (!expectMark) t.log(`Node.js ${process.versions.node} cannot detach a marked buffer: none is marked`)
  const marked = new Set<unknown>()
  const original = workerThreads.markAsUntransferable
  workerThreads.markAsUntransferable = (object: object) => {
    marked.add(object)
    original(object)
  }
  try {
    const small = Region.anonymous(PAGE)
    t.is(marked.has(small.buffer), expectMark, 'region.buffer')
    t.is(marked.has(small.bytes(1, 2).buffer), expectMark, 'bytes() of a region that fits one ArrayBuffer')
    const large = Region.anonymous(5 * GiB)
    t.is(marked.has(large.bytes(4 * GiB, PAGE).buffer), expectMark, 'bytes() of a region larger than one ArrayBuffer')
    const view = Region.attach(small.share())
    t.is(marked.has(view.buffer), expectMark, 'the buffer of a view')
    view.close()
    small.close()
    large.close()
  } finally {
    workerThreads.markAsUntransferable = original
  }
})

// The cases both runtimes run (cases/regions.ts; Bun runs them in bun/region-views.test.ts).
avaCases(regionCases)
