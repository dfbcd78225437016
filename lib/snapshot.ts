// pushSnapshot: a memory file into an object store as a snapshot (compressed, content-addressed
// chunks and a manifest) that Source.objectStore reads back.

import { provided } from './credentials'
import { argumentError, fromFailure, rangeError } from './errors'
import { binding } from './loader'
import { CONNECTION_OPTIONS, type ObjectStoreConnectionOptions, objectOptions } from './source'
import { knownKeys, optionalPages, options as optionsOf } from './validate'

/** Options of {@link pushSnapshot}: how to reach the store, as for {@link Source.objectStore}, and how to cut the file. */
export interface PushSnapshotOptions extends ObjectStoreConnectionOptions {
  /** Bytes per chunk, a multiple of 4096: what a fault fetches at least. Default: the base's, else 4 MiB. */
  chunkSize?: number
  /**
   * Bytes per frame of a chunk, compressed on its own: the least a fault far from others fetches
   * (one range request for the frames around its page). A multiple of 4096 that divides
   * `chunkSize`. Default: the base's, else 16 KiB (a size given that differs from the base's is refused:
   * no chunk could be shared).
   */
  frameSize?: number
  /** The zstd level, -7 (fastest) to 22 (smallest). Default 3. */
  level?: number
  /** Chunks read, compressed and uploaded at once. Default 16. */
  concurrency?: number
  /**
   * The manifest URL of a snapshot pushed before to the same bucket (the base this one was taken
   * from): the chunks it lists are known to be in the store (no request for them), and this
   * snapshot's chunks go under the same prefix.
   */
  base?: string
  /** Where the chunks go, a key prefix in the bucket. Default: the base's, else `chunks/` beside the manifest. */
  chunkPrefix?: string
}

/** The options of {@link pushSnapshot}, each once: a key not here is a mistake. */
const PUSH_OPTIONS: Record<keyof PushSnapshotOptions, true> = {
  ...CONNECTION_OPTIONS,
  chunkSize: true,
  frameSize: true,
  level: true,
  concurrency: true,
  base: true,
  chunkPrefix: true,
}

/** What {@link pushSnapshot} did. */
export interface PushSnapshotReport {
  /** The manifest's URL. */
  url: string
  /** The key prefix the chunks are under. */
  chunkPrefix: string
  /** Chunks in the file. */
  chunks: number
  /** Chunks uploaded by this push. */
  uploaded: number
  /** Chunks the store had already (listed by the base, found by a HEAD, or twice in the file). */
  deduped: number
  /** Of those, the ones the base listed. */
  fromBase: number
  /** Chunks that are holes or all zeros: recorded in the manifest, stored nowhere. */
  holes: number
  /**
   * Of the uploaded, chunks stored as a delta against the base's chunk at their place: only the
   * frames that differ are uploaded (at most half of them; else the chunk is stored whole).
   */
  deltas: number
  /** The file's length. */
  bytesIn: number
  /** The bytes of the chunks that hold data. */
  bytesData: number
  /** Compressed bytes uploaded by this push. */
  bytesOut: number
  /** Compressed bytes of every chunk the manifest lists (uploaded now or before). */
  bytesStored: number
  /** Requests made (HEAD, PUT, the base's GET), retries included. */
  requests: number
  /** How long the push took. */
  ms: number
}

/**
 * Stores a memory file (a VM snapshot's memory, say) at `url` (`s3://bucket/key`) as a snapshot:
 * the file cut into chunks, each chunk that holds data compressed (zstd) and stored under the
 * BLAKE3 hash of its bytes (unless the store has it already: a second push of the same or a
 * sibling snapshot uploads only the chunks that changed), holes and all-zero chunks recorded
 * without data, and a manifest at `url`, written last. `Source.objectStore(url)` then serves the
 * memory byte for byte.
 *
 * @example
 * ```ts
 * const report = await pushSnapshot('/snapshots/vm.mem', 's3://snapshots/vm1.mem', { endpoint: 'http://127.0.0.1:8333' })
 * console.log(`${report.uploaded} of ${report.chunks} chunks uploaded`)
 * ```
 */
export async function pushSnapshot(file: string, url: string, options?: PushSnapshotOptions): Promise<PushSnapshotReport> {
  if (typeof file !== 'string' || file === '') throw argumentError('file', 'a path', file)
  if (typeof url !== 'string') throw argumentError('url', 'a string', url)
  const given = optionsOf('options', options)
  knownKeys('options', given, PUSH_OPTIONS, 'pushSnapshot')
  // Left out, the chunk and frame sizes, the level and the concurrency are the core's defaults
  // (objectOptions checks the concurrency).
  const chunkSize = optionalPages('options.chunkSize', given.chunkSize)
  const frameSize = optionalPages('options.frameSize', given.frameSize)
  const { level } = given
  if (level !== undefined && typeof level !== 'number') throw argumentError('options.level', 'of type number', level)
  if (level !== undefined && (!Number.isInteger(level) || level < -7 || level > 22))
    throw rangeError('options.level', 'a zstd level, an integer from -7 to 22', level)
  const text = (name: string, value: unknown): string | undefined => {
    if (value === undefined) return undefined
    if (typeof value !== 'string' || value === '') throw argumentError(name, 'a non-empty string', value)
    return value
  }
  const base = text('options.base', given.base)
  const chunkPrefix = text('options.chunkPrefix', given.chunkPrefix)
  const { options: store, provider } = objectOptions(url, { ...given, chunkSize })
  const credentials = provider ? await provided(provider) : undefined
  // Refreshed while the push runs.
  const pushing = {}
  credentials?.keep(pushing)
  const report = await binding.pushSnapshot(file, url, store, level, frameSize, base, chunkPrefix, credentials?.binding)
  if (report.error) throw fromFailure(report.error)
  const { error: _, ...rest } = report
  return rest
}
