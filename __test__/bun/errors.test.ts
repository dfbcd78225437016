// The region-buffer and message cases under Bun that are Bun's own: region buffers refusing to be transferred,
// and error messages. Bun differs from Node.js 20 in one place: it refuses to transfer a marked
// ArrayBuffer (DataCloneError) where Node.js 20 copies it. bytes(), views in the owner's thread and
// share() on a closed region are in the case table both runtimes run (bun/region-views.test.ts).
import { describe, expect, test } from 'bun:test'
import { MessageChannel } from 'node:worker_threads'
import { Region, Source, type UffdError, Userfaultfd } from 'userfaultfd'

const PAGE = 4096

function thrown(fn: () => unknown): UffdError & TypeError & { code: string } {
  try {
    fn()
  } catch (error) {
    return error as UffdError & TypeError & { code: string }
  }
  throw new Error('expected a throw')
}

describe('field surface under Bun', () => {
  test('transferring a region buffer throws DataCloneError and leaves the region its buffer', () => {
    const region = Region.anonymous(4 * PAGE)
    region.bytes(0, 1)[0] = 7
    const { port1, port2 } = new MessageChannel()
    const buffer = region.buffer
    expect(thrown(() => port1.postMessage(buffer, [buffer])).name).toBe('DataCloneError')
    expect(buffer.byteLength).toBe(4 * PAGE)
    expect(new Uint8Array(buffer)[0]).toBe(7)
    port1.close()
    port2.close()
    region.close()
  })

  test('error messages say what is wrong', () => {
    const missing = thrown(() => Source.file('/nonexistent/userfaultfd-source'))
    expect(missing.code).toBe('ENOENT')
    expect(missing.message).toContain('does not exist')
    expect(missing.message).not.toContain('registered')
    const anonymous = thrown(() => Region.anonymous(2 ** 47 - 2 ** 20)) // in the address space, more than is free
    expect(anonymous.code).toBe('ENOMEM')
    expect(anonymous.message).not.toMatch(/huge/i)
    const region = Region.anonymous(PAGE)
    const uffd = new Userfaultfd()
    uffd.close()
    expect(thrown(() => uffd.dirtyPages(region)).code).toBe('EBADF')
    region.close()
  })
})
