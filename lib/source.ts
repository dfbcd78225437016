// Source: where a registered range's bytes come from when no JavaScript should run per fault.
import type { NativeSource } from './binding'
import { argumentError, call } from './errors'
import { native } from './loader'
import { bytesOf, integer, options as optionsOf } from './validate'

/** Options of {@link Source.file}. */
export interface FileSourceOptions {
  /** Where offset 0 of the region is in the file. Default 0. */
  offset?: number
}

/**
 * A native page source: `uffd.register(region, { source })` resolves the range's faults on the
 * fault loop's thread, with no hop into JavaScript, so even the thread that installed no handler
 * (the main thread) can read the memory. Past the end of bytes or a file, pages are zeros.
 *
 * @example
 * ```ts
 * uffd.register(region, { source: Source.file('/data/big.bin'), readahead: { pages: 16, adaptive: true } })
 * new Uint8Array(region.buffer)[1 << 20] // read from the file on first touch
 * ```
 */
export class Source {
  readonly #native: NativeSource

  private constructor(handle: NativeSource) {
    this.#native = handle
  }

  /** Zero pages (ZEROPAGE; zeroed COPY on hugetlbfs). */
  static zero(): Source {
    return new Source(native.NativeSource.zero())
  }

  /** Bytes in memory (copied once into native memory): offset 0 of the region is byte 0. */
  static bytes(bytes: ArrayBufferView | ArrayBuffer): Source {
    return new Source(native.NativeSource.bytes(bytesOf('bytes', bytes)))
  }

  /** A file read with pread: a path, or an open file descriptor (read through /proc/self/fd). */
  static file(pathOrFd: string | number, options?: FileSourceOptions): Source {
    const offset = integer('options.offset', optionsOf('options', options).offset ?? 0)
    let path: string
    if (typeof pathOrFd === 'number') path = `/proc/self/fd/${integer('fd', pathOrFd)}`
    else if (typeof pathOrFd === 'string') path = pathOrFd
    else throw argumentError('pathOrFd', 'a path or a file descriptor', pathOrFd)
    return new Source(call(() => native.NativeSource.file(path, offset)))
  }

  /**
   * Files stacked base first, each read from `offset` on: a full snapshot, then the diff snapshots
   * taken after it (which hold only the pages that changed and are sparse elsewhere). Each page
   * comes from the topmost file with data there (found with SEEK_DATA); what no file has is zeros,
   * mapped without a read.
   */
  static layers(paths: readonly string[], options?: FileSourceOptions): Source {
    if (!Array.isArray(paths) || paths.length === 0 || paths.some((p) => typeof p !== 'string')) {
      throw argumentError('paths', 'a non-empty array of paths', paths)
    }
    const offset = integer('options.offset', optionsOf('options', options).offset ?? 0)
    return new Source(call(() => native.NativeSource.layers([...paths], offset)))
  }

  /** For minor faults: map what the page cache holds (CONTINUE). */
  static pageCache(): Source {
    return new Source(native.NativeSource.pageCache())
  }

  /** 'zero', 'bytes', 'file', 'layers' or 'pageCache'. */
  get kind(): string {
    return this.#native.kind
  }

  /** @internal */
  get native(): NativeSource {
    return this.#native
  }
}
