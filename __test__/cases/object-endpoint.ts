// A malformed object-store endpoint is refused with an error that names it: before, the store's
// client panicked on a pool thread and the process aborted (exit 134), which no JavaScript could
// catch. Each case runs in a child process of the runtime under test (node, or bun), so an abort
// fails the case instead of the suite. Run under Node.js (object-endpoint.spec.ts) and Bun
// (bun/object-endpoint.test.ts).
import { spawnSync } from 'node:child_process'
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
