// `userfaultfd snapshot push FILE URL [options]`: a memory file into an object store as a snapshot
// (see pushSnapshot). lib/cli.ts hands `snapshot`'s arguments here; the promise gives the exit code
// (0 done, 1 the push failed, 2 a usage error), and what went wrong is said on stderr.
import { parseArgs } from 'node:util'
import type { UffdError } from './errors'
import { type PushSnapshotOptions, type PushSnapshotReport, pushSnapshot } from './snapshot'
import { commandLineParseError } from './validate'

export const SNAPSHOT_USAGE = `usage: userfaultfd snapshot push FILE URL [--base URL] [--chunk-size N] [--frame-size N] [--level N] [options]

Stores the memory file FILE at URL (s3://bucket/key, az://container/blob) as a snapshot: the file cut into chunks,
each compressed (zstd, in frames) and stored under the hash of its bytes, holes and all-zero chunks stored
nowhere, and a manifest at URL, written last. Chunks the store has already (from an earlier push,
or a snapshot of the same base) are not uploaded again. Source.objectStore(URL) and
userfaultfd firecracker --mem URL read the snapshot as they read a plain object.

  --base URL          a snapshot pushed before to the same bucket: the chunks it lists are known
                      to be there (no request for them), the chunks go under its prefix, and a
                      chunk that differs from the base's in few frames uploads only those (a delta)
  --chunk-size N      bytes per chunk, a multiple of 4096; K and M suffixes (default: the base's,
                      else 4M)
  --frame-size N      bytes per frame, compressed on its own: the least a random fault fetches; a
                      multiple of 4096 dividing the chunk size (default: the base's, else 16K)
  --level N           the zstd level, -7 (fastest) to 22 (smallest) (default 3)
  --concurrency N     chunks read, compressed and uploaded at once (default 16)
  --chunks PREFIX     the chunks' key prefix in the bucket (default: the base's, else chunks/
                      beside the manifest)
  --endpoint URL      the store's endpoint (default for s3:// AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else
                      AWS's; for az:// AZURE_STORAGE_ENDPOINT, else ACCOUNT.blob.core.windows.net)
  --region NAME       (default AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)
  --account NAME      for az://: the storage account (default AZURE_STORAGE_ACCOUNT_NAME; its
                      key from AZURE_STORAGE_ACCOUNT_KEY, or a SAS token from AZURE_STORAGE_SAS_TOKEN)
  --anonymous         unsigned requests (else AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY sign them)
  --credential-chain  look for credentials as the AWS SDKs do (profiles, web identity, container
                      endpoints)
  --json              print the report as one JSON line

Prints what was done: chunks, uploaded, deduplicated, holes, bytes in and out.`

/** The URLs of objects in a store: S3, Azure, plain HTTP. */
export const OBJECT_URL = /^(s3a?|az|azure|https?):\/\//

/** A usage error: said with the usage, exit code 2. */
class UsageError extends Error {}

/** A byte count: digits, optionally K or M (KiB, MiB). */
function bytes(name: string, text: string): number {
  const match = /^(\d+)\s*(k|kib|m|mib)?$/i.exec(text.trim())
  const unit = match?.[2]?.[0]?.toLowerCase()
  const value = match ? Number(match[1]) * (unit === 'k' ? 1024 : unit === 'm' ? 1024 * 1024 : 1) : Number.NaN
  if (!Number.isSafeInteger(value) || value <= 0 || value % 4096 !== 0) {
    throw new UsageError(`--${name} must be a positive multiple of 4096 bytes (e.g. 4M, 16K), not ${JSON.stringify(text)}`)
  }
  return value
}

function whole(name: string, text: string, min: number, max: number): number {
  const value = /^-?\d+$/.test(text.trim()) ? Number(text) : Number.NaN
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(text)}`)
  }
  return value
}

function parse(argv: string[]): { file: string; url: string; options: PushSnapshotOptions; json: boolean } | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      base: { type: 'string' },
      'chunk-size': { type: 'string' },
      'frame-size': { type: 'string' },
      level: { type: 'string' },
      concurrency: { type: 'string' },
      chunks: { type: 'string' },
      endpoint: { type: 'string' },
      region: { type: 'string' },
      account: { type: 'string' },
      anonymous: { type: 'boolean', default: false },
      'credential-chain': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) return 'help'
  const [action, file, url, ...extra] = positionals
  if (action === undefined) throw new UsageError('no action given (push)')
  if (action !== 'push') throw new UsageError(`unknown action '${action}' (push)`)
  if (file === undefined || url === undefined) throw new UsageError('push needs a FILE and a URL')
  if (extra.length > 0) throw new UsageError(`unexpected argument '${extra[0]}'`)
  if (!OBJECT_URL.test(url)) {
    throw new UsageError(`URL ${JSON.stringify(url)} is not an object URL (s3://bucket/key, az://container/blob, https://host/path)`)
  }
  if (values.base !== undefined && !OBJECT_URL.test(values.base)) {
    throw new UsageError(`--base ${JSON.stringify(values.base)} is not an object URL (s3://bucket/key, az://container/blob)`)
  }
  const options: PushSnapshotOptions = {
    ...(values.base === undefined ? {} : { base: values.base }),
    ...(values['chunk-size'] === undefined ? {} : { chunkSize: bytes('chunk-size', values['chunk-size']) }),
    ...(values['frame-size'] === undefined ? {} : { frameSize: bytes('frame-size', values['frame-size']) }),
    ...(values.level === undefined ? {} : { level: whole('level', values.level, -7, 22) }),
    ...(values.concurrency === undefined ? {} : { concurrency: whole('concurrency', values.concurrency, 1, 1024) }),
    ...(values.chunks === undefined ? {} : { chunkPrefix: values.chunks }),
    ...(values.endpoint === undefined ? {} : { endpoint: values.endpoint }),
    ...(values.region === undefined ? {} : { region: values.region }),
    ...(values.account === undefined ? {} : { account: values.account }),
    ...(values.anonymous ? { anonymous: true } : {}),
    ...(values['credential-chain'] ? { credentialChain: true } : {}),
  }
  return { file, url, options, json: values.json }
}

const MiB = 1024 * 1024

/** The report in one line a person reads. */
function describe(report: PushSnapshotReport): string {
  const mib = (n: number) => (n > 0 && n < MiB / 10 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / MiB).toFixed(1)} MiB`)
  const ratio = report.bytesStored > 0 ? (report.bytesData / report.bytesStored).toFixed(2) : '-'
  return (
    `pushed ${report.url}: ${report.chunks} chunks, ${report.uploaded} uploaded` +
    `${report.deltas ? ` (${report.deltas} as deltas of the base)` : ''}, ${report.deduped} already stored` +
    `${report.fromBase ? ` (${report.fromBase} listed by the base)` : ''}, ${report.holes} holes; ` +
    `${mib(report.bytesIn)} in (${mib(report.bytesData)} of data), ${mib(report.bytesOut)} uploaded, ` +
    `compression ${ratio}x, ${(report.ms / 1000).toFixed(2)} s; chunks under ${report.chunkPrefix}`
  )
}

/** Runs `userfaultfd snapshot ...` with the arguments after `snapshot`; resolves to the exit code, never rejects. */
export async function snapshotMain(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (error) {
    const { code, message } = error as { code?: string; message: string }
    if (error instanceof UsageError || code?.startsWith('ERR_PARSE_ARGS_')) {
      console.error(`userfaultfd: ${commandLineParseError({ code, message }, SNAPSHOT_USAGE)}\n\n${SNAPSHOT_USAGE}`)
      return 2
    }
    console.error(`userfaultfd: ${message}`)
    return 1
  }
  if (parsed === 'help') {
    console.log(SNAPSHOT_USAGE)
    return 0
  }
  try {
    const report = await pushSnapshot(parsed.file, parsed.url, parsed.options)
    console.log(parsed.json ? JSON.stringify(report) : describe(report))
    return 0
  } catch (error) {
    const { code, message: said, commandLineMessage } = error as UffdError
    const message = commandLineMessage ?? said
    if (code === 'ERR_INVALID_ARG_TYPE' || code === 'ERR_OUT_OF_RANGE' || code === 'ERR_INVALID_ARG_VALUE') {
      console.error(`userfaultfd: ${message}\n\n${SNAPSHOT_USAGE}`)
      return 2
    }
    console.error(`userfaultfd: ${code ? `${code}: ` : ''}${message}`)
    return 1
  }
}
