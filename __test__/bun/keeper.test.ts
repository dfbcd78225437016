// Under Bun too, the restore server with a keeper survives a SIGKILL: started again, it takes its
// VM back and the VM reads every byte right.
import { afterAll, expect, test } from 'bun:test'
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const dir = mkdtempSync(join(tmpdir(), 'uffd-bun-keeper-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const root = join(import.meta.dir, '..', '..')
const CLI = join(root, 'dist', 'lib', 'cli.js')

function run(command: string, args: string[]) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (chunk) => {
    out += chunk
  })
  child.stderr.on('data', (chunk) => {
    out += chunk
  })
  const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  )
  return { child, exit, output: () => out }
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 30_000
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not in time`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

test('a server killed with SIGKILL and started again takes its VM back from the keeper', async () => {
  const PAGES = 2000
  const peer = join(dir, 'vm-peer')
  execFileSync('cc', ['-O2', '-o', peer, join(root, '__test__', 'helpers', 'vm-peer.c')])
  const mem = join(dir, 'vm.mem')
  const bytes = Buffer.alloc(PAGES * 4096)
  for (let i = 0; i < bytes.length; i += 4) bytes.writeUInt32LE((i * 2654435761) >>> 0, i)
  writeFileSync(mem, bytes)
  const socket = join(dir, 'fc.sock')
  const keeper = join(dir, 'fc.keeper')
  const args = [CLI, 'firecracker', '--socket', socket, '--mem', mem, '--no-prefetch', '--keeper', keeper]
  const first = run(process.execPath, args)
  await until(() => first.output().includes('"keeper"'), 'the first server linked')
  const vm = run(peer, [socket, mem, String(PAGES), '--pace-ms', '1'])
  await until(() => vm.output().includes('running'), 'the VM running')
  first.child.kill('SIGKILL')
  await first.exit
  const second = run(process.execPath, args)
  const { code } = await vm.exit
  expect(vm.output()).toContain('"wrong":0')
  expect(code).toBe(0)
  await until(() => second.output().includes('"summary"'), 'the summary')
  expect(second.output()).toContain('"resume"')
  expect(second.output()).toContain('"outcome":"served"')
  second.child.kill('SIGINT')
  await second.exit
}, 60_000)
