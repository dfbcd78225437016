// The bench as a user gets it (issue 17): `npm pack` of the package and of the linux-x64-gnu binary
// package, installed offline into a fresh project, then `npx userfaultfd-bench --quick` run from a
// folder of its own with one quick scenario. It must write only into that folder (or --out), never
// into its installed package; build the C baseline in a temporary folder that is gone afterwards;
// find every file it imports; and, when a prerequisite is missing (no C compiler, no SeaweedFS
// `weed`), say in one line what it skips and why, and go on.
import { execFileSync, spawnSync } from 'node:child_process'
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import test from 'ava'

const root = join(__dirname, '..', '..', '..')
const work = mkdtempSync(join(tmpdir(), 'uffd-bench-published-'))
test.after.always(() => rmSync(work, { recursive: true, force: true }))

const run = (command: string, args: string[], cwd: string) => execFileSync(command, args, { cwd, encoding: 'utf8', stdio: 'pipe' })

/** Packs the package and its linux-x64-gnu binary package, installs both offline into a fresh project; the project's folder. */
function install(): string {
  const binaryDir = join(work, 'linux-x64-gnu')
  mkdirSync(binaryDir)
  for (const file of readdirSync(join(root, 'npm', 'linux-x64-gnu')))
    copyFileSync(join(root, 'npm', 'linux-x64-gnu', file), join(binaryDir, file))
  copyFileSync(join(root, 'userfaultfd.linux-x64-gnu.node'), join(binaryDir, 'userfaultfd.linux-x64-gnu.node'))
  const binary = run('npm', ['pack', '--pack-destination', work], binaryDir).trim().split('\n').pop() as string
  const [main] = JSON.parse(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], root)) as Array<{
    filename: string
  }>
  const project = join(work, 'project')
  mkdirSync(project)
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }))
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', join(work, main?.filename ?? ''), join(work, binary)], project)
  return project
}

/** Every file under `dir`, relative to it, with its size and modification time. */
function listing(dir: string): Map<string, string> {
  const files = new Map<string, string>()
  const walk = (at: string) => {
    for (const entry of readdirSync(at, { withFileTypes: true })) {
      const path = join(at, entry.name)
      if (entry.isDirectory()) walk(path)
      else {
        const s = statSync(path)
        files.set(relative(dir, path), `${s.size} ${s.mtimeMs}`)
      }
    }
  }
  walk(dir)
  return files
}

function changes(before: Map<string, string>, after: Map<string, string>): string[] {
  const changed = [...after].filter(([path, stamp]) => before.get(path) !== stamp).map(([path]) => `new or changed: ${path}`)
  return [...changed, ...[...before.keys()].filter((path) => !after.has(path)).map((path) => `removed: ${path}`)]
}

let project: string
test.before(() => {
  project = install()
})

const packageDir = () => join(project, 'node_modules', 'userfaultfd')
const BOUND = 240_000

test.serial('the installed bench finds every file it imports', (t) => {
  const dir = join(packageDir(), 'bench')
  const missing: string[] = []
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.mjs'))) {
    const text = readFileSync(join(dir, file), 'utf8')
    const specifiers = [...text.matchAll(/(?:from|import\()\s*'(\.\.?\/[^']+)'|new URL\('(\.\.?\/[^']+)', import\.meta\.url\)/g)]
    for (const [, imported, url] of specifiers) {
      const target = join(dir, (imported ?? url) as string)
      if (!existsSync(target)) missing.push(`${file} -> ${relative(packageDir(), target)}`)
    }
  }
  t.deepEqual(missing, [])
})

test.serial('npx userfaultfd-bench --help lists the scenarios and the options on stdout', (t) => {
  const cwd = join(project, 'help')
  mkdirSync(cwd)
  const help = spawnSync('npx', ['--no', '--', 'userfaultfd-bench', '--help'], { cwd, encoding: 'utf8', timeout: BOUND })
  t.is(help.status, 0, help.stderr)
  for (const word of ['latency-copy', 'kernel-floor', 'object-store', 'scaling', '--quick', '--scenario', '--out', '--reps', '--json'])
    t.true(help.stdout.includes(word), `--help names ${word}:\n${help.stdout}`)
})

test.serial(
  'npx userfaultfd-bench --quick writes its results in the current folder, the C baseline in a temporary folder, nothing in its package',
  (t) => {
    const cwd = join(project, 'results-here')
    const temp = join(work, 'tmp')
    mkdirSync(cwd)
    mkdirSync(temp)
    const before = listing(packageDir())
    const bench = spawnSync('npx', ['--no', '--', 'userfaultfd-bench', '--quick', '--reps', '1', '--scenario', 'kernel-floor'], {
      cwd,
      encoding: 'utf8',
      timeout: BOUND,
      env: { ...process.env, TMPDIR: temp },
    })
    t.is(bench.status, 0, `${bench.stderr}\n${bench.stdout}`)
    t.regex(bench.stdout, /kernel-floor/)
    t.deepEqual(changes(before, listing(packageDir())), [], 'the package folder is as installed')
    const written = readdirSync(cwd)
    t.is(written.length, 1, `one results file in the current folder: ${written.join(', ')}`)
    const results = JSON.parse(readFileSync(join(cwd, written[0] as string), 'utf8'))
    // The C baseline ran, from a binary built in a folder under TMPDIR that is gone now.
    const cBin = results.meta.baselines.c.bin as string
    t.is(results.meta.baselines.c.error, undefined)
    t.is(dirname(dirname(cBin)), temp, cBin)
    t.false(existsSync(dirname(cBin)), 'the temporary folder of the C baseline is removed')
    t.deepEqual(readdirSync(temp), [], 'nothing is left in TMPDIR')
    const ok = (id: string) => results.summaries.some((s: { contender: string; n: number }) => s.contender === id)
    t.true(ok('c-read') && ok('js-read'), JSON.stringify(results.summaries.map((s: { contender: string }) => s.contender)))
    t.deepEqual(results.failures, [])
  },
)

test.serial('without a C compiler or a SeaweedFS, the bench says in one line each what it skips and why, and goes on', (t) => {
  // A PATH with node and the tools the runner uses, but no cc, gcc, clang or weed.
  const bin = join(work, 'bin')
  mkdirSync(bin)
  symlinkSync(process.execPath, join(bin, 'node'))
  for (const tool of ['taskset', 'getconf']) {
    const found = ['/usr/bin', '/bin'].map((d) => join(d, tool)).find((p) => existsSync(p))
    if (found) symlinkSync(found, join(bin, tool))
  }
  const cwd = join(project, 'no-tools')
  const out = join(work, 'out')
  mkdirSync(cwd)
  const before = listing(packageDir())
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: bin }
  delete env.WEED
  delete env.CC
  const bench = spawnSync(
    process.execPath,
    [
      join(project, 'node_modules', '.bin', 'userfaultfd-bench'),
      '--quick',
      '--reps',
      '1',
      '--scenario',
      'kernel-floor',
      '--scenario',
      'object-store',
      '--out',
      out,
    ],
    { cwd, encoding: 'utf8', timeout: BOUND, env },
  )
  t.is(bench.status, 0, `${bench.stderr}\n${bench.stdout}`)
  const lines = bench.stderr.split('\n')
  t.is(lines.filter((l) => /^skipped: the C baseline: no C compiler \(cc\)/.test(l)).length, 1, bench.stderr)
  t.is(lines.filter((l) => /^skipped: object-store: no SeaweedFS `weed`/.test(l)).length, 1, bench.stderr)
  t.notRegex(bench.stderr, /ERR_MODULE_NOT_FOUND|\n\s+at /, 'no crash')
  // The package's own rows still ran; the results went to --out only.
  t.deepEqual(readdirSync(cwd), [])
  const [file, ...more] = readdirSync(out)
  t.deepEqual(more, [])
  const results = JSON.parse(readFileSync(join(out, file as string), 'utf8'))
  t.true(results.summaries.some((s: { contender: string }) => s.contender === 'js-read'))
  t.deepEqual(results.failures, [])
  t.deepEqual(changes(before, listing(packageDir())), [], 'the package folder is as installed')
})
