import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'

// Mistakes with a store on the command line, said in the command line's words (its flags, not
// the library's options), before any request: no store is started, and none is reached.
const CLI = join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js')
const dir = mkdtempSync(join(tmpdir(), 'uffd-cli-stores-'))
const mem = join(dir, 'vm.mem')
writeFileSync(mem, Buffer.alloc(64 * 1024, 7))
test.after.always(() => rmSync(dir, { recursive: true, force: true }))

/** Runs the command line with no credentials in its environment. */
function cli(...args: string[]) {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, AWS_EC2_METADATA_DISABLED: 'true' }
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env, timeout: 30_000 })
}

test('firecracker --mem in a store: no credentials says --credential-chain and --anonymous; gs:// and --account with s3:// are usage errors', (t) => {
  const socket = join(dir, 'fc.sock')
  const none = cli('firecracker', '--socket', socket, '--mem', 's3://snaps/vm.mem', '--endpoint', 'http://127.0.0.1:1')
  t.is(none.status, 1)
  const line = JSON.parse(none.stdout.trim().split('\n').at(-1) as string)
  t.like(line, { event: 'error', code: 'EINVAL' })
  t.regex(line.message, /no credentials for s3:\/\/snaps\/vm\.mem: set AWS_ACCESS_KEY_ID .*--credential-chain.*--anonymous/)
  t.notRegex(line.message, /options\.|anonymous: true|credentialChain/)
  const account = cli('firecracker', '--socket', socket, '--mem', 'az://vms/vm.mem')
  t.regex(account.stdout, /pass --account NAME \(or set AZURE_STORAGE_ACCOUNT_NAME\)/)
  const gs = cli('firecracker', '--socket', socket, '--mem', 'gs://snaps/vm.mem')
  t.is(gs.status, 2)
  t.regex(gs.stderr, /--mem gs:\/\/snaps\/vm\.mem names a store this package does not read: use s3:\/\/, az:\/\/ or http\(s\):\/\//)
  const wrongAccount = cli('firecracker', '--socket', socket, '--mem', 's3://snaps/vm.mem', '--account', 'acct', '--anonymous')
  t.is(wrongAccount.status, 2)
  t.regex(wrongAccount.stderr, /--account is for a --mem in Azure/)
})

test('snapshot push: no credentials and a bad endpoint say the flags; --credential-chain is taken', (t) => {
  const none = cli('snapshot', 'push', mem, 's3://snaps/vm.mem', '--endpoint', 'http://127.0.0.1:1')
  t.is(none.status, 1)
  t.regex(none.stderr, /EINVAL: objectStore: no credentials .*--credential-chain.*--anonymous/)
  const endpoint = cli('snapshot', 'push', mem, 'az://vms/vm.mem', '--account', 'acct', '--anonymous', '--endpoint', '127.0.0.1:10000')
  t.regex(endpoint.stderr, /give a URL such as http:\/\/127\.0\.0\.1:8333 \(--endpoint; .*AZURE_STORAGE_ENDPOINT for az:\/\/\)/)
  t.notRegex(endpoint.stderr, /options\.endpoint/)
  // Asked to look, with nothing to find (no profile, no token file): still no credentials, said so.
  const chain = cli('snapshot', 'push', mem, 's3://snaps/vm.mem', '--endpoint', 'http://127.0.0.1:1', '--credential-chain')
  t.is(chain.status, 1)
  t.notRegex(chain.stderr, /unknown option/i)
})

test('firecracker: an empty layer above a base in a store is refused as above a local base, before any request', (t) => {
  const socket = join(dir, 'fc-empty.sock')
  const empty = join(dir, 'empty.mem')
  writeFileSync(empty, '')
  const expected = { event: 'error', code: 'EINVAL' }
  const said = new RegExp(
    `the memory file ${empty} is empty: it is not a snapshot's memory .*give the file Firecracker wrote as mem_file_path`,
  )
  // The store's endpoint answers nothing: the refusal comes before any request.
  const overStore = cli(
    'firecracker',
    '--socket',
    socket,
    '--mem',
    's3://snaps/vm.mem',
    '--mem',
    empty,
    '--endpoint',
    'http://127.0.0.1:1',
    '--anonymous',
  )
  const overFile = cli('firecracker', '--socket', socket, '--mem', mem, '--mem', empty)
  for (const run of [overStore, overFile]) {
    t.is(run.status, 1, run.stderr)
    const line = JSON.parse(run.stdout.trim().split('\n').at(-1) as string)
    t.like(line, expected)
    t.regex(line.message, said)
  }
})

test('a misspelt flag names the nearest one, in snapshot push, firecracker and keeper', (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['snapshot', 'push', mem, 's3://snaps/vm.mem', '--frame_size', '16K'], /unknown option --frame_size: did you mean --frame-size\?/],
    [['firecracker', '--sokcet', join(dir, 'x.sock')], /unknown option --sokcet: did you mean --socket\?/],
    [['keeper', '--grace', '5'], /unknown option --grace: did you mean --grace-ms\?/],
  ]
  for (const [args, expected] of cases) {
    const run = cli(...args)
    t.is(run.status, 2, run.stderr)
    t.regex(run.stderr, expected)
  }
  t.notRegex(cli('firecracker', '--zzzzzzzz').stderr, /did you mean/)
})
