// The restore server survives its own restart: with a keeper, a server killed (SIGKILL) or
// handed over (SIGTERM) and started again takes back the VMs it served, which go on with every
// byte right; a keeper left with no server kills its VMs after its grace, never leaving them frozen.
// Run under Node.js (firecracker-keeper.spec.ts) and Bun (bun/firecracker-keeper.test.ts), whose servers and
// keepers then run on Bun too.
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { serveFirecracker } from 'userfaultfd'
import { root, spawnCollecting, until, within } from '../helpers/harness'
import { closed, errorsOf, vmKit } from '../helpers/vm'
import { table } from './check'

const { table: keeperCases, define } = table()

export { keeperCases }

const kit = vmKit('uffd-fc-keeper-')
/** Every process a test started, killed by pid after the tests however they ended (a failed one too). */
const started = new Set<{ child: { kill(signal: NodeJS.Signals): boolean; exitCode: number | null } }>()
define.after(() => {
  for (const process of started) if (process.child.exitCode === null) process.child.kill('SIGKILL')
  kit.remove()
})

const CLI = join(root, 'dist', 'lib', 'cli.js')

/** The command serving `mem` on `socket` with the keeper at `keeper` (no prefetch: the VM's pages come by its faults). */
function server(socket: string, mem: string, keeper: string, args: string[] = []) {
  return kept(
    spawnCollecting(
      process.execPath,
      [CLI, 'firecracker', '--socket', socket, '--mem', mem, '--no-prefetch', '--keeper', keeper, ...args],
      'the server',
      120_000,
    ),
  )
}

function kept<T extends { child: { kill(signal: NodeJS.Signals): boolean; exitCode: number | null } }>(process: T): T {
  started.add(process)
  return process
}

/** The pids of the keeper processes serving at `keeper`. */
function keepers(keeper: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', `keeper-main.js ${keeper}`], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .filter(Boolean)
      .map(Number)
  } catch {
    return []
  }
}

interface PeerResult {
  pages: number
  wrong: number
}

function resultOf(out: string): PeerResult {
  const line = out
    .trim()
    .split('\n')
    .find((text) => text.includes('"wrong"'))
  return JSON.parse(line ?? '{}') as PeerResult
}

/**
 * A server with a keeper, and a VM of `pages` pages it serves that reads on, a page a millisecond:
 * its memory file, socket and keeper path are named after `name`.
 */
async function servedVm(name: string, pages: number, args: string[] = []) {
  const mem = kit.memoryFile(`${name}.mem`, pages)
  const socket = kit.socketPath()
  const keeper = join(kit.dir, `${name}.keeper`)
  const first = server(socket, mem, keeper, args)
  await until(() => first.output().includes('listening'), 'listening')
  const vm = kept(kit.startPeer(socket, mem, pages, ['--pace-ms', '1']))
  await until(() => vm.output().includes('running'), 'the VM running')
  return { mem, socket, keeper, first, vm }
}

define(
  'a server killed (SIGKILL) three times under a running VM is started again and takes it back: every byte right, the VM never killed',
  async (t) => {
    const PAGES = 3000
    const { mem, socket, keeper, first, vm } = await servedVm('killed', PAGES)
    let current = first
    for (let restart = 0; restart < 3; restart++) {
      current.child.kill('SIGKILL')
      await current.exit
      t.is(keepers(keeper).length, 1, 'the keeper outlives its server')
      current = server(socket, mem, keeper)
      await until(() => current.output().includes('"resume"'), 'the VM taken back')
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    const { code, out } = await vm.exit
    t.is(code, 0, out)
    t.deepEqual(resultOf(out), { ...resultOf(out), pages: PAGES, wrong: 0 })
    await until(() => current.output().includes('"summary"'), 'the summary')
    const summary = JSON.parse(
      current
        .output()
        .split('\n')
        .find((line) => line.includes('"summary"')) ?? '{}',
    )
    t.is(summary.outcome, 'served')
    t.true(summary.resumed)
    current.child.kill('SIGINT')
    t.is((await current.exit).code, 0, current.output())
    // The server stopped and no VM is left: the keeper ends, and its socket goes with it.
    await until(() => keepers(keeper).length === 0 && !existsSync(keeper), 'the keeper ended')
    t.pass()
  },
)

define('SIGTERM with a keeper hands over: the server exits at once, the VM waits, and the next server serves it to its end', async (t) => {
  const { mem, socket, keeper, first, vm } = await servedVm('handover', 2000)
  first.child.kill('SIGTERM')
  const { code, out } = await within(first.exit, 'the handover', 10_000)
  t.is(code, 0, out)
  t.regex(out, /"event":"handover".*"vms":1/)
  await new Promise((resolve) => setTimeout(resolve, 300)) // the VM waits with no server
  const next = server(socket, mem, keeper)
  const done = await vm.exit
  t.is(done.code, 0, done.out)
  t.is(resultOf(done.out).wrong, 0)
  await until(() => next.output().includes('"summary"'), 'the summary')
  t.regex(next.output(), /"event":"resume"/)
  t.regex(next.output(), /"outcome":"served"/)
  next.child.kill('SIGINT')
  await next.exit
})

define('a keeper left with no server for its grace kills its VMs (never leaves them frozen), then ends', async (t) => {
  const { keeper, first: only, vm } = await servedVm('grace', 2000, ['--keeper-grace-ms', '500'])
  only.child.kill('SIGKILL')
  const { signal } = await within(vm.exit, 'the VM killed by the keeper', 30_000)
  t.is(signal, 'SIGKILL')
  await until(() => keepers(keeper).length === 0 && !existsSync(keeper), 'the keeper ended')
})

define(
  'a keeper run on its own (userfaultfd keeper) is linked to by servers; a second server cannot link to it while one is',
  async (t) => {
    const PAGES = 64
    const mem = kit.memoryFile('own.mem', PAGES)
    const keeper = join(kit.dir, 'own.keeper')
    const own = spawnCollecting(process.execPath, [CLI, 'keeper', '--socket', keeper, '--grace-ms', '60000'], 'the keeper', 120_000)
    await until(() => existsSync(keeper), 'the keeper listening')
    const first = serveFirecracker({ socket: kit.socketPath(), memoryFile: mem, keeper })
    t.teardown(() => first.close())
    t.deepEqual(await within(new Promise((resolve) => first.once('keeper', resolve)), 'the link', 30_000), { path: keeper, vms: 0 })
    const second = serveFirecracker({ socket: kit.socketPath(), memoryFile: mem, keeper })
    const errors = errorsOf(second)
    await closed(second)
    t.is(errors.length, 1)
    t.is(errors[0]?.code, 'EBUSY')
    t.regex(errors[0]?.message ?? '', /another server \(pid \d+\) is linked/)
    const vm = kit.startPeer(first.socket as string, mem, PAGES)
    t.is((await vm.exit).code, 0)
    first.close()
    await closed(first)
    // Its server gone and no VM held: the keeper ends.
    t.is((await within(own.exit, 'the keeper ending', 30_000)).code, 0)
  },
)

define('keeper options are checked: an empty path, a grace that is not a whole number of milliseconds in range', (t) => {
  const mem = kit.memoryFile('options.mem', 4)
  const socket = kit.socketPath()
  t.throws(() => serveFirecracker({ socket, memoryFile: mem, keeper: '' }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => serveFirecracker({ socket, memoryFile: mem, keeper: join(kit.dir, 'k'), keeperGraceMs: 1.5 }), {
    code: 'ERR_INVALID_ARG_TYPE',
  })
  t.throws(() => serveFirecracker({ socket, memoryFile: mem, keeper: join(kit.dir, 'k'), keeperGraceMs: 0 }), {
    instanceOf: RangeError,
  })
  t.throws(() => serveFirecracker({ socket, memoryFile: mem, keeper: join(kit.dir, 'missing', 'k.sock') }), {
    code: 'ENOENT',
    message: /missing is not a folder that exists/,
  })
  t.false(existsSync(socket), 'nothing was left listening')
})
