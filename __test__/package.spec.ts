// What a user installs: `npm pack` of the package and of the linux-x64-gnu binary package, installed
// offline into a fresh project, then imported as ESM, required as CommonJS and run under Bun, each
// taking real faults.
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'

const root = join(__dirname, '..', '..', '..')
const work = mkdtempSync(join(tmpdir(), 'uffd-package-'))
test.after.always(() => rmSync(work, { recursive: true, force: true }))

const run = (command: string, args: string[], cwd: string) => execFileSync(command, args, { cwd, encoding: 'utf8', stdio: 'pipe' })

function pack(): { main: string; binary: string; files: string[] } {
  const binaryDir = join(work, 'linux-x64-gnu')
  mkdirSync(binaryDir)
  for (const file of readdirSync(join(root, 'npm', 'linux-x64-gnu')))
    copyFileSync(join(root, 'npm', 'linux-x64-gnu', file), join(binaryDir, file))
  copyFileSync(join(root, 'userfaultfd.linux-x64-gnu.node'), join(binaryDir, 'userfaultfd.linux-x64-gnu.node'))
  const binary = run('npm', ['pack', '--pack-destination', work], binaryDir).trim().split('\n').pop() as string
  const listing = JSON.parse(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], root)) as Array<{
    filename: string
    files: Array<{ path: string }>
  }>
  const [main] = listing
  return { main: join(work, main?.filename ?? ''), binary: join(work, binary), files: (main?.files ?? []).map((f) => f.path) }
}

const check = `
const uffd = new Userfaultfd()
const region = Region.anonymous(64 * 4096)
const bytes = new Uint8Array(64 * 4096).map((_, i) => (i * 7) & 0xff)
uffd.register(region, { source: Source.bytes(bytes), readahead: { pages: 4 } })
const view = new Uint8Array(region.buffer)
let wrong = 0
for (let i = 0; i < view.length; i += 1021) if (view[i] !== ((i * 7) & 0xff)) wrong++
console.log(JSON.stringify({ wrong, faults: uffd.stats.faults.missing, error: typeof UffdError }))
uffd.close(); region.close()
`

test.serial('npm pack: a fresh project installs the two tarballs offline; ESM, CommonJS and Bun each take real faults', (t) => {
  const { main, binary, files } = pack()
  t.true(files.includes('dist/index.mjs') && files.includes('dist/lib/worker-host.js'))
  t.true(files.includes('bench/run.mjs') && files.includes('bench/baseline.c'), 'npx userfaultfd-bench ships its runner')
  t.false(
    files.some((f) => /^(crates|__test__|bench\/out|examples|npm|target)\//.test(f) || f.endsWith('.node') || f.endsWith('.rs')),
    files.join(' '),
  )
  const project = join(work, 'project')
  mkdirSync(project)
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }))
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', main, binary], project)
  writeFileSync(join(project, 'esm.mjs'), `import { Userfaultfd, Region, Source, UffdError } from 'userfaultfd'\n${check}`)
  writeFileSync(join(project, 'cjs.cjs'), `const { Userfaultfd, Region, Source, UffdError } = require('userfaultfd')\n${check}`)
  for (const [runtime, script] of [
    [process.execPath, 'esm.mjs'],
    [process.execPath, 'cjs.cjs'],
    [join(root, 'node_modules', '.bin', 'bun'), 'esm.mjs'],
  ] as const) {
    const result = JSON.parse(run(runtime, [script], project).trim())
    t.deepEqual(result, { wrong: 0, faults: 16, error: 'function' }, `${runtime} ${script}`)
  }
  // Without the binary package, the import fails with one error that says what to install.
  const bare = join(work, 'bare')
  mkdirSync(bare)
  writeFileSync(join(bare, 'package.json'), JSON.stringify({ name: 'bare', version: '1.0.0', private: true }))
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', main], bare)
  const error = t.throws(() => run(process.execPath, ['-e', "require('userfaultfd')"], bare))
  t.regex(String((error as { stderr?: string }).stderr), /Install the package userfaultfd-linux-x64-gnu/)
})
