// A malformed object-store endpoint is refused with an error that names it: before, the store's
// client panicked on a pool thread and the process aborted (exit 134), which no JavaScript could
// catch. Each case runs in a child process of the runtime under test (node, or bun), so an abort
// fails the case instead of the suite. Run under Node.js (object-endpoint.spec.ts) and Bun
// (bun/object-endpoint.test.ts).
import { spawnSync } from 'node:child_process'
import {
  type FirecrackerOptions,
  type ObjectStoreSourceOptions,
  type PushSnapshotOptions,
  pushSnapshot,
  Source,
  serveFirecracker,
} from 'userfaultfd'
import { table } from './check'

const { table: endpointCases, define } = table()

export { endpointCases }

const BAD_ENDPOINTS = ['127.0.0.1:8333', 'localhost:8333', '', 'http://', 'ftp://127.0.0.1:8333']

const script = `
const { Source } = require('userfaultfd')
const endpoint = process.env.ENDPOINT_OPTION
const options = { region: 'us-east-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } }
if (endpoint !== undefined) options.endpoint = endpoint
Source.objectStore('s3://bucket/key', options).then(
  () => console.log(JSON.stringify({ opened: true })),
  (error) => console.log(JSON.stringify({ name: error.name, code: error.code, message: error.message })),
)
`

function open(env: Record<string, string>) {
  const run = spawnSync(process.execPath, ['-e', script], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, AWS_EC2_METADATA_DISABLED: 'true', ...env },
  })
  return { status: run.status, signal: run.signal, stderr: run.stderr, outcome: JSON.parse(run.stdout.trim() || '{}') }
}

for (const endpoint of BAD_ENDPOINTS) {
  for (const from of ['options.endpoint', 'AWS_ENDPOINT_URL'] as const) {
    if (from === 'AWS_ENDPOINT_URL' && endpoint === '') continue // an empty variable means none
    define(`endpoint ${JSON.stringify(endpoint)} in ${from} is refused by name, no abort`, (t) => {
      const run = open(from === 'options.endpoint' ? { ENDPOINT_OPTION: endpoint } : { AWS_ENDPOINT_URL: endpoint })
      t.is(run.status, 0, `exit ${run.status} ${run.signal ?? ''}\n${run.stderr}`)
      t.is(run.outcome.name, 'UffdError', JSON.stringify(run.outcome))
      t.is(run.outcome.code, 'EINVAL')
      t.true(String(run.outcome.message).includes(`endpoint ${JSON.stringify(endpoint)}`), run.outcome.message)
    })
  }
}

// A misspelt option of a store was left out without a word, and its default used (the store's
// real endpoint, say, for `blobEndpoint`): now refused, with the nearest option named.
const credentials = { accessKeyId: 'a', secretAccessKey: 'b' }
const misspelt: Array<[string, () => Promise<unknown>, string, string]> = [
  [
    'Source.objectStore',
    () => Source.objectStore('az://c/b', { blobEndpoint: 'http://127.0.0.1:10000/a' } as ObjectStoreSourceOptions),
    'options.blobEndpoint',
    'endpoint',
  ],
  [
    'Source.objectStore',
    () => Source.objectStore('s3://b/k', { credentials, chunksize: 8192 } as ObjectStoreSourceOptions),
    'options.chunksize',
    'chunkSize',
  ],
  [
    'the retry of an object store',
    () => Source.objectStore('s3://b/k', { credentials, retry: { delay: 10 } } as ObjectStoreSourceOptions),
    'options.retry.delay',
    'delayMs',
  ],
  [
    'pushSnapshot',
    () => pushSnapshot('/dev/null', 's3://b/k', { credentials, frame_size: 8192 } as PushSnapshotOptions),
    'options.frame_size',
    'frameSize',
  ],
  [
    'serveFirecracker',
    async () => serveFirecracker({ socket: '/nonexistent/uffd.sock', memoryFiles: ['/dev/null'] } as FirecrackerOptions),
    'options.memoryFiles',
    'memoryFile',
  ],
]
for (const [where, call, name, nearest] of misspelt) {
  define(`a misspelt option of ${where} (${name}) is refused, naming ${nearest}`, async (t) => {
    const error = await t.throwsAsync<Error & { code: string }>(call, { instanceOf: TypeError, code: 'ERR_INVALID_ARG_VALUE' })
    t.is(error?.message, `The property "${name}" is not an option of ${where}: did you mean "${nearest}"?`)
  })
}
define('an option nothing is near is refused without a guess', async (t) => {
  const error = await t.throwsAsync<Error>(
    () => Source.objectStore('s3://b/k', { credentials, zzzzzzzzzz: 1 } as ObjectStoreSourceOptions),
    { code: 'ERR_INVALID_ARG_VALUE' },
  )
  t.is(error?.message, 'The property "options.zzzzzzzzzz" is not an option of Source.objectStore')
})
