// Source: where a registered range's bytes come from when no JavaScript should run per fault.
import type { BindingObjectOptions, BindingSource } from './binding'
import { type CredentialProvider, credentialsOf, type ObjectStoreCredentials, provided } from './credentials'
import { argumentError, call, fromFailure } from './errors'
import { binding } from './loader'
import { bytesOf, integer, knownKeys, optionalBoolean, options as optionsOf } from './validate'

/** Options of {@link Source.file}. */
export interface FileSourceOptions {
  /** Where offset 0 of the region is in the file. Default 0. */
  offset?: number
  /**
   * Write what the program writes back to the file (it is opened for writing too): before a
   * page is dropped by a residency limit, on {@link Userfaultfd.flush}, and as the range goes
   * (unregistered, closed). Written pages are found by write-protection (a fault per page on its
   * first write after it was mapped or written back). For `Source.layers`, the topmost file is
   * the one written: a page written back there is what the next read of it finds first. Default
   * false: what the program writes stays in memory only.
   */
  writable?: boolean
}

/** How transient failures (connection refused or reset, 5xx, a timeout) are retried. */
export interface ObjectStoreRetryOptions {
  /** Tries after the first. Default 8. */
  retries?: number
  /** The first pause; each next one doubles up to `maxDelayMs`. Default 50. */
  delayMs?: number
  /** Default 2000. */
  maxDelayMs?: number
  /** No retry starts this long after the first try. Default 10000. */
  timeoutMs?: number
}

/** Options of {@link Source.objectStore}. */
export interface ObjectStoreSourceOptions {
  /**
   * The S3 endpoint, e.g. `http://127.0.0.1:8333`. Default: `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`,
   * else AWS's own. For `az://`, the account's blob endpoint (Azurite's
   * `http://127.0.0.1:10000/devstoreaccount1`, say). Default: `AZURE_STORAGE_ENDPOINT`, else
   * `https://ACCOUNT.blob.core.windows.net`.
   */
  endpoint?: string
  /** Default: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `'us-east-1'`. */
  region?: string
  /**
   * Keys, or a function that gives them (asked again before they expire: `fromNodeProviderChain()`
   * of `@aws-sdk/credential-providers`, say). Default: `AWS_ACCESS_KEY_ID` and
   * `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`); with `credentialChain`, the rest of the chain.
   */
  credentials?: ObjectStoreCredentials | CredentialProvider
  /**
   * Without keys, look for credentials as the AWS SDKs do: the profile (`profile`, `AWS_PROFILE`,
   * else `default`) of `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` (keys, a web identity,
   * a `credential_process`), a web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`, at
   * `AWS_ENDPOINT_URL_STS` if set), a container endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or
   * `_RELATIVE_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN` or `_FILE`), and the instance
   * metadata service only with `instanceMetadata`. Temporary credentials are fetched again before
   * they expire. Default false: no request for credentials is ever made.
   */
  credentialChain?: boolean
  /** The profile the chain reads. Default `AWS_PROFILE`, else `default`. */
  profile?: string
  /** Let the chain ask the instance metadata service (`AWS_EC2_METADATA_SERVICE_ENDPOINT`), last. Default false. */
  instanceMetadata?: boolean
  /** Unsigned requests, for a public bucket. Without credentials, this must be said. Default false. */
  anonymous?: boolean
  /** `bucket.host` requests instead of path style (`host/bucket`, the default). */
  virtualHostedStyle?: boolean
  /** For `az://container/blob`: the storage account. Default: `AZURE_STORAGE_ACCOUNT_NAME`. */
  account?: string
  /** For `az://`: the account's shared key. Default: `AZURE_STORAGE_ACCOUNT_KEY`. */
  accountKey?: string
  /** For `az://`: a SAS token (`sv=...&sig=...`), instead of the key. Default: `AZURE_STORAGE_SAS_TOKEN`. */
  sasToken?: string
  /** Bytes per range request; a multiple of 4096. Default 4 MiB. */
  chunkSize?: number
  /** Range requests in flight at once. Default 16. */
  concurrency?: number
  /**
   * Chunks read ahead of sequential faults (and of a prefetch's chunk), at most. Default:
   * `concurrency`. Never more than `memoryCache` holds besides the chunk in use: chunks read
   * ahead would push each other out of memory before they are used, and be fetched again.
   */
  readaheadChunks?: number
  /** Random faults shrink the request to a page; false: whole chunks always. Default true. */
  adaptive?: boolean
  /** Bytes of chunks kept in memory. Default `2 * concurrency * chunkSize`. */
  memoryCache?: number
  /** A directory the processes of this machine share: each chunk is fetched once per machine. */
  cacheDir?: string
  /** How transient failures are retried. */
  retry?: ObjectStoreRetryOptions
  /** Default 5000. */
  connectTimeoutMs?: number
  /** One request, body included. Default 30000. */
  requestTimeoutMs?: number
  /**
   * A request that fails past the retry bound with a transient failure takes the store as down:
   * until a probe in the background (with the retry backoff) gets an answer, every fault on the
   * source gets the fallback at once, and one `'error'` says so per outage (the others are counted
   * in `objectStats.fallbackPages`). With this option, the pages that got the fallback during the
   * outage are discarded when the store answers again, so they fault and are read from it; what
   * was written to them meanwhile is lost. Default false: they keep the fallback's zeros.
   */
  refetchAfterOutage?: boolean
  /** Where the `AWS_*` (and `AZURE_STORAGE_*`) variables are read. Default `process.env`. */
  env?: Record<string, string | undefined>
}

/** What an object-store source has done: {@link Source.objectStats}. */
export interface ObjectSourceStats {
  /** Range requests that succeeded. */
  requests: number
  /** The bytes those requests brought. */
  bytesFetched: number
  /** Tries again after a transient failure. */
  retries: number
  /** Requests that failed for good. */
  failures: number
  /** Chunks found in memory. */
  memoryHits: number
  /** Chunks read from the disk cache (`cacheDir`: fetched by another process). */
  diskHits: number
  /** Chunks this source wrote to the disk cache. */
  diskWrites: number
  /** Faults that waited for the network. */
  faults: number
  /** Bytes of chunks held in memory now. */
  cachedBytes: number
  /** Times the store was found down (a request failed past the retry bound). */
  outages: number
  /** Times a probe found it answering again after an outage: down while `outages > recoveries`. */
  recoveries: number
  /** Pages whose fault got the fallback because the store failed (said once per outage). */
  fallbackPages: number
  /** Of those, pages discarded when the store answered again (`refetchAfterOutage`), to be read again. */
  refetchedPages: number
  /** The object's size when the source was made. */
  size: number
  /** The object's ETag when the source was made, if the store gave one. */
  etag?: string
  /**
   * Whether the object is a snapshot's manifest ({@link pushSnapshot}): its chunks are then read
   * whole, decompressed and checked against their hash, its holes served as zeros without a
   * request, and `size` is the memory's.
   */
  snapshot: boolean
}

/** A page whose fault got the fallback because the store failed: {@link Source.fallbackPages}. */
export interface ObjectFallbackPage {
  /** The region's id (`region.id`). */
  region: number
  /** The page's offset in the region. */
  offset: number
}

/**
 * What {@link Source.objectStore} gives: a source that knows its object's size and counts its
 * requests, so neither is possibly undefined.
 */
export interface ObjectStoreSource extends Source {
  /** Always `'objectStore'`. */
  readonly kind: 'objectStore'
  /** The object's size in bytes, read when the source was made (the same as `objectStats.size`). */
  readonly size: number
  /** The source's counters (requests, bytes fetched, retries, cache hits). */
  readonly objectStats: ObjectSourceStats
  /** See {@link Source.fallbackPages}. */
  fallbackPages(): ObjectFallbackPage[]
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
  readonly #binding: BindingSource
  /** The local files of a layered source, base first (above its object if it has one). */
  #files: readonly string[] = []

  private constructor(handle: BindingSource) {
    this.#binding = handle
  }

  /** Zero pages (ZEROPAGE; zeroed COPY on hugetlbfs). */
  static zero(): Source {
    return new Source(binding.BindingSource.zero())
  }

  /** Bytes in memory (copied once into native memory): offset 0 of the region is byte 0. */
  static bytes(bytes: ArrayBufferView | ArrayBuffer): Source {
    return new Source(binding.BindingSource.bytes(bytesOf('bytes', bytes)))
  }

  /** A file read with pread: a path, or an open file descriptor (read through /proc/self/fd). */
  static file(pathOrFd: string | number, options?: FileSourceOptions): Source {
    const { offset: at, writable } = optionsOf('options', options)
    const offset = integer('options.offset', at ?? 0)
    const write = optionalBoolean('options.writable', writable, false)
    let path: string
    if (typeof pathOrFd === 'number') path = `/proc/self/fd/${integer('fd', pathOrFd)}`
    else if (typeof pathOrFd === 'string') path = pathOrFd
    else throw argumentError('pathOrFd', 'a path or a file descriptor', pathOrFd)
    return new Source(call(() => binding.BindingSource.file(path, offset, write)))
  }

  /**
   * Files stacked base first, each read from `offset` on: a full snapshot, then the diff snapshots
   * taken after it (which hold only the pages that changed and are sparse elsewhere). Each page
   * comes from the topmost file with data there (found with SEEK_DATA); what no file has is zeros,
   * mapped without a read. With `writable`, what the program writes goes back to the topmost file
   * (a diff of its own: the files below are never written).
   *
   * The base may be an object in a store (a source from {@link Source.objectStore}) with local
   * files above it: a page a file has comes from the file with no request, the others from the
   * object (through its chunks, caches and readahead). Read only (`writable` is refused).
   *
   * @example
   * ```ts
   * const base = await Source.objectStore('s3://snapshots/base.mem', { endpoint })
   * const memory = Source.layers([base, '/var/lib/vm/diff-1.mem', '/var/lib/vm/diff-2.mem'])
   * ```
   */
  static layers(layers: readonly (string | Source)[], options?: FileSourceOptions): Source {
    const paths = layerPaths(layers)
    const first = layers[0]
    const { offset: at, writable } = optionsOf('options', options)
    const offset = integer('options.offset', at ?? 0)
    const write = optionalBoolean('options.writable', writable, false)
    if (first instanceof Source) {
      if (write) throw argumentError('options.writable', 'unset over an object (nothing is written back to a store)', write)
      const source = new Source(call(() => binding.BindingSource.layersOver(first.#binding, paths, offset)))
      source.#files = paths
      return source
    }
    const source = new Source(call(() => binding.BindingSource.layers([...paths], offset, write)))
    source.#files = paths
    return source
  }

  /**
   * An object in a store: `s3://bucket/key` (any S3-compatible store), `az://container/blob` (an
   * Azure storage account, named by `account`) or `http(s)://host/path`
   * (plain Range GETs). Reads the object's size and ETag first, so a missing object (`ENOENT`,
   * status 404), a refusal (`EACCES`, 403) or a store that cannot be reached (`ECONNREFUSED`)
   * rejects here. Faults wait for their chunk on native threads (no JavaScript, no blocked loop);
   * the object is read in chunks, many at once, with readahead on sequential faults.
   *
   * An object that is a snapshot's manifest (stored by {@link pushSnapshot}, known by its
   * content type) is read too, and the source serves the memory it describes: its chunk size is
   * the snapshot's (`chunkSize` is then ignored); sequential faults fetch whole chunks,
   * decompressed and checked against their hash, and a fault far from the others only the frames
   * (16 KiB by default) around its page, each checked against its sum (`adaptive: false`: whole
   * chunks always, fewer round trips for more bytes); a chunk that does not match is an error
   * (`EPROTO`), never served;
   * holes are zeros without a request, and `cacheDir` keys chunks by content, so snapshots that
   * share chunks share the cache.
   *
   * @example
   * ```ts
   * const source = await Source.objectStore('s3://snapshots/vm.mem', { endpoint: 'http://127.0.0.1:8333', anonymous: true })
   * uffd.register(region, { source })
   * ```
   */
  static async objectStore(url: string, options?: ObjectStoreSourceOptions): Promise<ObjectStoreSource> {
    if (typeof url !== 'string') throw argumentError('url', 'a string', url)
    const given = optionsOf('options', options)
    knownKeys('options', given, OBJECT_STORE_OPTIONS, 'Source.objectStore')
    const { options: bindingOptions, provider } = objectOptions(url, given)
    const credentials = provider ? await provided(provider) : undefined
    const outcome = await binding.openObjectSource(url, bindingOptions, credentials?.binding)
    const error = outcome.takeError()
    if (error) throw fromFailure(error)
    const handle = outcome.takeSource()
    if (!handle) throw new Error('openObjectSource gave neither a source nor an error')
    const source = new Source(handle) as ObjectStoreSource
    credentials?.keep(source)
    return source
  }

  /** For minor faults: map what the page cache holds (CONTINUE). */
  static pageCache(): Source {
    return new Source(binding.BindingSource.pageCache())
  }

  /** 'zero', 'bytes', 'file', 'layers', 'pageCache' or 'objectStore'. */
  get kind(): string {
    return this.#binding.kind
  }

  /**
   * How many bytes the source has for a region, from the region's offset 0 on: the length of the
   * bytes, a file's bytes past its `offset` (asked each time: a file can grow), the largest
   * layer's, an object's size (read when the source was made). Undefined for `zero()` and
   * `pageCache()`, which have no end. Past it, pages are zeros (or go to the handler with
   * `fallthrough`).
   */
  get size(): number | undefined {
    return this.#binding.size ?? undefined
  }

  /** What `JSON.stringify` prints of a source: its kind and size. */
  toJSON(): {
    /** {@link Source.kind}. */
    kind: string
    /** {@link Source.size}. */
    size: number | undefined
  } {
    return { kind: this.kind, size: this.size }
  }

  /** An object-store source's counters (requests, bytes fetched, retries, cache hits); else undefined. */
  get objectStats(): ObjectSourceStats | undefined {
    return this.#binding.objectStats ?? undefined
  }

  /**
   * An object-store source's pages (of regions still open) whose fault got the fallback because
   * the store failed, oldest first, the latest 65536: they hold the fallback's zeros, unless
   * `refetchAfterOutage` discarded them when the store answered again (they are then no longer
   * listed). Undefined for other sources.
   */
  fallbackPages(): ObjectFallbackPage[] | undefined {
    return this.#binding.fallbackPages() ?? undefined
  }

  /**
   * Reads the object's first `chunks` chunks (all by default) straight from the store with the
   * source's concurrency and chunk size, without userfaultfd or caches: the raw bandwidth (or one
   * request) the bench compares the source with.
   * @internal
   */
  async readRaw(chunks?: number): Promise<{ bytes: number; ms: number }> {
    const read = await call(() => this.#binding.readRaw(chunks))
    if (read.error) throw fromFailure(read.error)
    return { bytes: read.bytes, ms: read.ms }
  }

  /**
   * The object `KEY` + `suffix` beside an object-store source's object, read with its client and
   * credentials: its URL, and its bytes (undefined when there is none).
   * @internal
   */
  async readBeside(suffix: string): Promise<{ url: string; bytes: Buffer | undefined }> {
    const read = await call(() => this.#binding.readBeside(suffix))
    if (read.error) throw fromFailure(read.error)
    return { url: read.url, bytes: read.bytes ?? undefined }
  }

  /**
   * Stores `bytes` as the object `KEY` + `suffix` beside an object-store source's object; gives its URL.
   * @internal
   */
  async writeBeside(suffix: string, bytes: Uint8Array): Promise<string> {
    const written = await call(() => this.#binding.writeBeside(suffix, bytes))
    if (written.error) throw fromFailure(written.error)
    return written.url
  }

  /**
   * The local files of a layered source, base first (above its object, if it has one).
   * @internal
   */
  get files(): readonly string[] {
    return this.#files
  }

  /** @internal */
  get binding(): BindingSource {
    return this.#binding
  }
}

/**
 * The options of {@link Source.objectStore} that say how to reach the store and sign its
 * requests: what {@link pushSnapshot} takes of them.
 */
export type ObjectStoreConnectionOptions = Pick<
  ObjectStoreSourceOptions,
  | 'endpoint'
  | 'region'
  | 'credentials'
  | 'credentialChain'
  | 'profile'
  | 'instanceMetadata'
  | 'anonymous'
  | 'virtualHostedStyle'
  | 'account'
  | 'accountKey'
  | 'sasToken'
  | 'retry'
  | 'connectTimeoutMs'
  | 'requestTimeoutMs'
  | 'env'
>

/**
 * The keys of {@link ObjectStoreConnectionOptions}, each once: a key of a store's options that
 * is not listed is a mistake (`knownKeys`).
 * @internal
 */
export const CONNECTION_OPTIONS: Readonly<Record<keyof ObjectStoreConnectionOptions, true>> = {
  endpoint: true,
  region: true,
  credentials: true,
  credentialChain: true,
  profile: true,
  instanceMetadata: true,
  anonymous: true,
  virtualHostedStyle: true,
  account: true,
  accountKey: true,
  sasToken: true,
  retry: true,
  connectTimeoutMs: true,
  requestTimeoutMs: true,
  env: true,
}

const OBJECT_STORE_OPTIONS: Record<keyof ObjectStoreSourceOptions, true> = {
  ...CONNECTION_OPTIONS,
  chunkSize: true,
  concurrency: true,
  readaheadChunks: true,
  adaptive: true,
  memoryCache: true,
  cacheDir: true,
  refetchAfterOutage: true,
}

const RETRY_OPTIONS: Record<keyof ObjectStoreRetryOptions, true> = { retries: true, delayMs: true, maxDelayMs: true, timeoutMs: true }

/**
 * Every option of an object source, checked, with the environment read (as the AWS SDKs do); the
 * numbers left out are the core's defaults.
 * @internal
 */
export function objectOptions(
  url: string,
  options: ObjectStoreSourceOptions,
): { options: BindingObjectOptions; provider?: CredentialProvider } {
  const env = options.env ?? process.env
  const s3 = url.startsWith('s3://') || url.startsWith('s3a://')
  const az = url.startsWith('az://') || url.startsWith('azure://')
  const text = (name: string, value: unknown): string | undefined => {
    if (value === undefined) return undefined
    if (typeof value !== 'string') throw argumentError(name, 'a string', value)
    return value
  }
  const chainAsked = {
    credentials: options.credentials,
    credentialChain: optionalBoolean('options.credentialChain', options.credentialChain, false),
    profile: text('options.profile', options.profile),
    instanceMetadata: optionalBoolean('options.instanceMetadata', options.instanceMetadata, false),
  }
  const { fields, provider } = s3 ? credentialsOf(chainAsked, env) : { fields: {}, provider: undefined }
  // Numbers left out are the core's defaults (what the option's comment says).
  const at = (name: string, value: unknown, min = 0) => (value === undefined ? undefined : integer(name, value, min))
  const flag = (name: string, value: unknown) => (value === undefined ? undefined : optionalBoolean(name, value, false))
  const retry = optionsOf('options.retry', options.retry)
  knownKeys('options.retry', retry, RETRY_OPTIONS, 'the retry of an object store')
  const bindingOptions: BindingObjectOptions = {
    endpoint: s3
      ? (text('options.endpoint', options.endpoint) ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL)
      : az
        ? (text('options.endpoint', options.endpoint) ?? env.AZURE_STORAGE_ENDPOINT)
        : undefined,
    account: az ? (text('options.account', options.account) ?? env.AZURE_STORAGE_ACCOUNT_NAME) : undefined,
    accountKey: az ? (text('options.accountKey', options.accountKey) ?? env.AZURE_STORAGE_ACCOUNT_KEY) : undefined,
    sasToken: az ? (text('options.sasToken', options.sasToken) ?? env.AZURE_STORAGE_SAS_TOKEN) : undefined,
    region: s3 ? (text('options.region', options.region) ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION) : undefined,
    ...fields,
    anonymous: optionalBoolean('options.anonymous', options.anonymous, false),
    virtualHostedStyle: optionalBoolean('options.virtualHostedStyle', options.virtualHostedStyle, false),
    // Not whole pages: the core's EINVAL, as for every size of a region.
    chunkSize: at('options.chunkSize', options.chunkSize, 1),
    concurrency: at('options.concurrency', options.concurrency, 1),
    readaheadChunks: at('options.readaheadChunks', options.readaheadChunks),
    adaptive: flag('options.adaptive', options.adaptive),
    memoryCache: at('options.memoryCache', options.memoryCache),
    cacheDir: text('options.cacheDir', options.cacheDir),
    retries: at('options.retry.retries', retry.retries),
    retryDelayMs: at('options.retry.delayMs', retry.delayMs),
    retryMaxDelayMs: at('options.retry.maxDelayMs', retry.maxDelayMs),
    retryTimeoutMs: at('options.retry.timeoutMs', retry.timeoutMs),
    connectTimeoutMs: at('options.connectTimeoutMs', options.connectTimeoutMs),
    requestTimeoutMs: at('options.requestTimeoutMs', options.requestTimeoutMs),
    refetchAfterOutage: flag('options.refetchAfterOutage', options.refetchAfterOutage),
  }
  return { options: bindingOptions, provider }
}

/**
 * The paths of `Source.layers`'s list, each mistake named by its place: an empty list, an object
 * source above the base, a URL given as a path, a source that is not in a store.
 */
function layerPaths(layers: readonly (string | Source)[]): string[] {
  if (!Array.isArray(layers) || layers.length === 0) {
    throw argumentError(
      'layers',
      'a non-empty array: the base first (a path or an object-store source), then the paths of the layers above it',
      layers,
    )
  }
  return layers.flatMap((layer: unknown, index) => {
    const name = `layers[${index}]`
    if (layer instanceof Source) {
      if (index > 0) throw argumentError(name, 'a path: only the first layer (the base) may be an object-store source', layer)
      if (layer.kind !== 'objectStore')
        throw argumentError(name, `a path or an object-store source, not a ${layer.kind} source: give its path`, layer)
      return []
    }
    if (typeof layer !== 'string') throw argumentError(name, 'a path', layer)
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(layer)) {
      throw argumentError(name, 'a path, not a URL: open the object with await Source.objectStore(url) and pass that source first', layer)
    }
    return [layer]
  })
}
