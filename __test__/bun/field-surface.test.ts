// The field-surface cases under Bun: regions larger than one ArrayBuffer, bytes() checking its
// arguments, region buffers refusing to be transferred, views in the owner's thread, and tokens
// and error messages. Bun differs from Node.js 20 in one place: it refuses to transfer a marked
// ArrayBuffer (DataCloneError) where Node.js 20 copies it.
import { describe, expect, test } from 'bun:test'
import { constants } from 'node:buffer'
import { MessageChannel } from 'node:worker_threads'
import { Region, Source, UffdError, Userfaultfd } from 'userfaultfd'

const PAGE = 4096
const GiB = 2 ** 30
const LIMIT_MS = 15_000

function thrown(fn: () => unknown): UffdError & TypeError & { code: string } {
  try {
    fn()
  } catch (error) {
    return error as UffdError & TypeError & { code: string }
  }
  throw new Error('expected a throw')
}

function readInWorker(region: Region, offsets: number[]): Promise<number[]> {
  const worker = new Worker(new URL('./toucher.ts', import.meta.url).href)
  const bytes = new Promise<number[]>((resolve, reject) => {
    worker.onmessage = (event) => resolve(event.data)
    worker.onerror = (event) => reject(new Error(event.message))
  })
  worker.postMessage({ shared: region.share(), offsets })
  const limit = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the toucher: no answer in time')), LIMIT_MS))
  return Promise.race([bytes, limit]).finally(() => worker.terminate())
}

describe('field surface under Bun', () => {
  test('a region larger than one ArrayBuffer is read and written through bytes() at any offset, unregistered', () => {
    const region = Region.anonymous(8 * GiB)
    expect(Region.maxBufferBytes).toBe(constants.MAX_LENGTH)
    const error = thrown(() => region.buffer)
    expect(error).toBeInstanceOf(UffdError)
    expect(error.code).toBe('ERANGE')
    expect(error.message).toContain('bytes(offset, length)')
    const page = region.bytes(6 * GiB, PAGE)
    expect(page[0]).toBe(0)
    page[0] = 0x5a
    page[PAGE - 1] = 0xa5
    expect([...region.bytes(6 * GiB + PAGE - 1, 2)]).toEqual([0xa5, 0])
    expect(region.bytes(6 * GiB, 1)[0]).toBe(0x5a)
    expect(region.bytes(6 * GiB).byteLength).toBe(2 * GiB)
    expect(thrown(() => region.bytes(0, Region.maxBufferBytes + 1)).code).toBe('ERANGE')
    region.close()
    expect(page.byteLength).toBe(0)
    expect(thrown(() => region.bytes(6 * GiB, PAGE)).code).toBe('EBADF')
  })

  test('bytes() validates its arguments like every other call', () => {
    const region = Region.anonymous(4 * PAGE)
    expect(thrown(() => region.bytes('1' as unknown as number))).toBeInstanceOf(TypeError)
    expect(thrown(() => region.bytes('1' as unknown as number)).code).toBe('ERR_INVALID_ARG_TYPE')
    for (const bad of [Number.NaN, -1, 0.5]) {
      const error = thrown(() => region.bytes(bad))
      expect(error).toBeInstanceOf(RangeError)
      expect(error.code).toBe('ERR_OUT_OF_RANGE')
    }
    for (const [offset, length] of [
      [region.size + 1, undefined],
      [0, region.size + 1],
      [region.size - 1, 2],
    ]) {
      const error = thrown(() => region.bytes(offset as number, length))
      expect(error).toBeInstanceOf(RangeError)
      expect(error.code).toBe('ERR_OUT_OF_RANGE')
    }
    region.close()
  })

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

  test('attach in the owner thread gives a view whose close leaves the region open', async () => {
    const uffd = new Userfaultfd()
    const region = Region.anonymous(4 * PAGE)
    uffd.register(region)
    const view = Region.attach(region.share())
    expect(view).not.toBe(region)
    expect(view.owner).toBe(false)
    const named: Region[] = []
    uffd.handle((fault) => {
      named.push(fault.region)
      fault.copy(new Uint8Array(PAGE).fill(0x42))
    })
    expect(await readInWorker(region, [PAGE + 3])).toEqual([0x42])
    expect(named[0]).toBe(region)
    const viewBuffer = view.buffer
    view.close()
    expect(viewBuffer.byteLength).toBe(0)
    expect(region.closed).toBe(false)
    expect(region.bytes(PAGE + 3, 1)[0]).toBe(0x42)
    uffd.close()
    region.close()
  })

  test('share on a closed region throws EBADF', () => {
    const region = Region.anonymous(PAGE)
    region.close()
    const error = thrown(() => region.share())
    expect(error).toBeInstanceOf(UffdError)
    expect(error.code).toBe('EBADF')
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
