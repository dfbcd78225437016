// az:// against Azurite (Azure's storage emulator, from the npm registry) on loopback: a blob read
// through faults, a snapshot pushed to a container and read back, a VM restored from it by the
// Firecracker server with its trace kept beside it, and the refusals. Every byte is compared with
// what was stored; the only account is Azurite's well-known development one.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import test from 'ava'
import { type ObjectStoreSourceOptions, pushSnapshot, Source, type UffdError } from 'userfaultfd'
import { ACCOUNT, ACCOUNT_KEY, Azurite, azuriteBinary } from './helpers/azurite'
import { spawnCollecting, until } from './helpers/harness'
import { objectBytes, PAGE, serveSource } from './helpers/object-data'
import { vmKit } from './helpers/vm'

const { path: azurite, why } = azuriteBinary()
if (!azurite) {
  if (process.env.CI) test('Azurite is installed for the az:// tests', (t) => t.fail(why))
  else console.warn(`az:// tests skipped: ${why}`)
}
const run = azurite ? test.serial : test.serial.skip

const MiB = 1024 * 1024
let store: Azurite | undefined
const closers: (() => void)[] = []

test.before(async () => {
  if (azurite) store = await Azurite.start()
})

test.after.always(async () => {
  for (const close of closers) close()
  await store?.stop()
})

function azure(): Azurite {
  if (!store) throw new Error('Azurite is not running')
  return store
}

/** How every source here reaches Azurite: its endpoint, the account and its key, no environment. */
const options = (extra: ObjectStoreSourceOptions = {}): ObjectStoreSourceOptions => ({
  endpoint: azure().endpoint,
  account: ACCOUNT,
  accountKey: ACCOUNT_KEY,
  env: {},
  ...extra,
})

const serve = (source: Source, size: number, options: { timeoutMs?: number; fallthrough?: boolean } = {}) =>
  serveSource(source, size, closers, options)

run('a blob of an Azure container is read through faults by the main thread, every byte, a request per chunk', async (t) => {
  const size = 6 * MiB + 1234
  const bytes = Buffer.from(objectBytes(size, 5))
  await (await azure().container('plain')).getBlockBlobClient('data/blob.bin').uploadData(bytes)
  const source = await Source.objectStore('az://plain/data/blob.bin', options({ chunkSize: MiB }))
  t.is(source.size, size)
  t.truthy(source.objectStats.etag)
  const { region, errors } = serve(source, size)
  t.true(Buffer.from(region.buffer, 0, size).equals(bytes))
  t.true(
    new Uint8Array(region.buffer, size).every((b) => b === 0),
    'zeros past its end',
  )
  t.is(source.objectStats.requests, 7, 'one request per 1 MiB chunk')
  t.deepEqual(errors, [])

  // A SAS token instead of the key: read it again, with the token's own signature.
  const sas = azure().readSas('plain')
  const bySas = await Source.objectStore('az://plain/data/blob.bin', {
    endpoint: azure().endpoint,
    account: ACCOUNT,
    sasToken: `?${sas}`,
    env: {},
  })
  t.true(Buffer.from(serve(bySas, size).region.buffer, 0, size).equals(bytes))
  const other = await t.throwsAsync<UffdError>(
    Source.objectStore('az://other/blob.bin', { endpoint: azure().endpoint, account: ACCOUNT, sasToken: sas, env: {} }),
  )
  t.is(other?.code, 'EACCES', `a token for another container is refused: ${other?.message}`)
})

run('az:// refusals say what is wrong: no account, no credentials, a wrong key (403), a missing blob (404), gs://', async (t) => {
  await azure().container('refusals')
  const url = 'az://refusals/none.bin'
  await t.throwsAsync(Source.objectStore(url, { endpoint: azure().endpoint, env: {} }), {
    code: 'EINVAL',
    message: /no storage account for az:\/\/refusals\/none\.bin: pass options\.account/,
  })
  await t.throwsAsync(Source.objectStore(url, { endpoint: azure().endpoint, account: ACCOUNT, env: {} }), {
    code: 'EINVAL',
    message: /no credentials for az:\/\/refusals\/none\.bin.*no managed identity is ever asked/,
  })
  const wrongKey = Buffer.alloc(64, 1).toString('base64')
  const refused = await t.throwsAsync<UffdError>(Source.objectStore(url, options({ accountKey: wrongKey })))
  t.is(refused?.code, 'EACCES', refused?.message)
  t.is(refused?.status, 403)
  t.regex(refused?.message ?? '', /HTTP 403: refused \(check the credentials, and that they may read it\)/)
  // A key that is not base64, a token that is not query pairs: named before any request.
  await t.throwsAsync(Source.objectStore(url, options({ accountKey: 'not base64!!' })), {
    code: 'EINVAL',
    message: /account key for az:.* is not base64/,
  })
  await t.throwsAsync(Source.objectStore(url, options()), { code: 'ENOENT' })
  // The key and the account from AZURE_STORAGE_* when the options leave them out.
  await t.throwsAsync(
    Source.objectStore(url, {
      endpoint: azure().endpoint,
      env: { AZURE_STORAGE_ACCOUNT_NAME: ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY: ACCOUNT_KEY },
    }),
    { code: 'ENOENT' },
  )
  await t.throwsAsync(Source.objectStore('gs://bucket/key'), { code: 'EOPNOTSUPP', message: /no Google Cloud Storage emulator/ })
})

run('a snapshot pushed to an Azure container is read back byte for byte; a second push uploads nothing', async (t) => {
  const kit = vmKit('uffd-azure-push-')
  t.teardown(() => kit.remove())
  await azure().container('snaps')
  const mem = kit.memoryFile('vm.mem', 600, PAGE, 3, (p) => p < 200 || p >= 400)
  const report = await pushSnapshot(mem, 'az://snaps/vm/one.mem', { ...options(), chunkSize: 256 * 1024 })
  t.like(report, { chunks: 10, holes: 2 })
  t.true(report.uploaded > 0)
  const again = await pushSnapshot(mem, 'az://snaps/vm/two.mem', { ...options(), chunkSize: 256 * 1024 })
  t.is(again.uploaded, 0)
  t.is(again.deduped, report.uploaded)
  const source = await Source.objectStore('az://snaps/vm/two.mem', options())
  t.true(source.objectStats.snapshot)
  const { region, errors } = serve(source, source.size)
  t.true(Buffer.from(region.buffer, 0, source.size).equals(readFileSync(mem)))
  t.deepEqual(errors, [])
})

run(
  'userfaultfd firecracker --mem az:// --account: a VM restored from a snapshot in Azure, its trace kept beside it and replayed by the next server',
  async (t) => {
    const kit = vmKit('uffd-azure-vm-')
    t.teardown(() => kit.remove())
    await azure().container('vms')
    const pages = 128
    const mem = kit.memoryFile('vm.mem', pages * 2)
    await pushSnapshot(mem, 'az://vms/vm.mem', options())
    const cli = join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js')
    const replayed: number[] = []
    for (let run = 0; run < 2; run++) {
      const socket = kit.socketPath()
      const args = [cli, 'firecracker', '--socket', socket, '--mem', 'az://vms/vm.mem', '--account', ACCOUNT]
      args.push('--endpoint', azure().endpoint, '--working-set-beside', '--once')
      // The key from the environment, as a service manager would give it.
      const env = { ...process.env, AZURE_STORAGE_ACCOUNT_KEY: ACCOUNT_KEY }
      const server = spawnCollecting(process.execPath, args, 'the server', 60_000, { env })
      await until(() => server.output().includes('listening'), 'listening')
      const vm = kit.startPeer(socket, mem, pages, ['--regions', '2', '--delay-ms', '300'])
      const { code, out } = await vm.exit
      t.is(code, 0, `${out}\n${server.output()}`)
      t.regex(out, new RegExp(`"pages":${pages * 2},"wrong":0`))
      const done = await server.exit
      t.is(done.code, 0, done.out)
      if (run === 0) t.regex(done.out, /"event":"trace","path":"az:\/\/vms\/vm\.mem\.working-set\.json"/)
      const summary = JSON.parse(done.out.split('\n').find((l) => l.includes('"event":"summary"')) ?? '{}') as { replayedPages: number }
      replayed.push(summary.replayedPages)
    }
    t.is(replayed[0], 0)
    t.true((replayed[1] ?? 0) > 0, String(replayed))
  },
)
