// What a user installs, installed as a user would: `npm run pack:all`'s tarballs (the main package and
// the platform package built here) published to a real npm registry, Verdaccio, started on loopback,
// then `userfaultfd` installed by name into fresh projects with npm, pnpm and Bun, on a PATH with no
// Rust toolchain. The three platform packages that cannot be built here are first not on that registry
// (npm, pnpm and Bun skip an optional dependency the registry does not have, without an error), then
// published as stand-ins (a real user's registry has all four: each client must take only the one of
// this machine, by os, cpu and libc). Each project takes real faults (bytes checked) from
// ESM, CommonJS and Bun, runs the `userfaultfd` command and a bench scenario; the tarball passes
// @arethetypeswrong/cli and publint.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import test from 'ava'

const root = join(__dirname, '..', '..', '..')
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }
const PLATFORMS = ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl']
const work = mkdtempSync(join(tmpdir(), 'uffd-registry-'))
const bun = join(root, 'node_modules', '.bin', 'bun')
let registry: ChildProcess | undefined
let url = ''
let tools: { verdaccio: string; pnpm: string }
let packed: { main: string; platforms: Record<string, string>; missing: string[] }

// No cargo or rustc on the PATH the installs and the programs run with: nothing may build from source.
const PATH = (process.env.PATH ?? '')
  .split(delimiter)
  .filter((dir) => dir && !['cargo', 'rustc'].some((tool) => existsSync(join(dir, tool))))
  .join(delimiter)
const cleanEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { PATH, HOME: join(work, 'home'), TMPDIR: tmpdir(), ...extra }
  return env
}

function run(command: string, args: string[], cwd: string, env = cleanEnv()): string {
  const result = spawnSync(command, args, { cwd, env, encoding: 'utf8', timeout: 240_000 })
  if (result.status !== 0)
    throw new Error(`${command} ${args.join(' ')} exited ${result.status ?? result.signal}:\n${result.stdout}\n${result.stderr}`)
  return result.stdout
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

async function startRegistry(): Promise<void> {
  const port = await freePort()
  url = `http://127.0.0.1:${port}/`
  const upstream = execFileSync('npm', ['config', 'get', 'registry'], { encoding: 'utf8' }).trim()
  const dir = join(work, 'verdaccio')
  mkdirSync(dir)
  // Its own packages are published here (anyone may); every other package comes from the registry npm is configured with.
  writeFileSync(
    join(dir, 'config.yaml'),
    [
      `storage: ${join(dir, 'storage')}`,
      'uplinks:',
      '  upstream:',
      `    url: ${upstream}`,
      'packages:',
      "  'userfaultfd':",
      '    access: $all',
      '    publish: $all',
      "  'userfaultfd-*':",
      '    access: $all',
      '    publish: $all',
      "  '**':",
      '    access: $all',
      '    proxy: upstream',
      'log: { type: stdout, format: pretty, level: warn }',
      '',
    ].join('\n'),
  )
  registry = spawn(process.execPath, [tools.verdaccio, '--config', join(dir, 'config.yaml'), '--listen', `127.0.0.1:${port}`], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let log = ''
  registry.stdout?.on('data', (chunk) => (log += chunk))
  registry.stderr?.on('data', (chunk) => (log += chunk))
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    if (registry.exitCode !== null) throw new Error(`verdaccio exited ${registry.exitCode}: ${log}`)
    try {
      if ((await fetch(`${url}-/ping`)).ok) return
    } catch {}
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  throw new Error(`verdaccio did not answer on ${url} within 60 s: ${log}`)
}

/** A fresh project whose npm, pnpm and Bun use only the loopback registry, with caches of its own. */
function freshProject(name: string): string {
  const dir = join(work, name)
  mkdirSync(dir)
  const host = url.replace(/^http:/, '')
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, version: '1.0.0', private: true }))
  writeFileSync(join(dir, '.npmrc'), `registry=${url}\n${host}:_authToken=anonymous\ncache=${join(work, 'cache', name)}\n`)
  writeFileSync(
    join(dir, 'bunfig.toml'),
    `[install]\nregistry = "${url}"\n[install.cache]\ndir = "${join(work, 'cache', `${name}-bun`)}"\n`,
  )
  return dir
}

test.before(async () => {
  mkdirSync(join(work, 'home'))
  tools = JSON.parse(
    execFileSync(process.execPath, [join(root, 'scripts', 'test-tools.cjs')], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .pop() as string,
  )
  const out = execFileSync(process.execPath, [join(root, 'scripts', 'pack-all.cjs'), '--no-build', '--out', join(work, 'packages')], {
    cwd: root,
    encoding: 'utf8',
  })
  packed = JSON.parse(out.trim().split('\n').pop() as string)
  await startRegistry()
  const publisher = freshProject('publisher')
  for (const tarball of [...Object.values(packed.platforms), packed.main]) run('npm', ['publish', tarball, '--tag', 'latest'], publisher)
})

test.after.always(() => {
  if (registry?.pid && registry.exitCode === null) process.kill(registry.pid, 'SIGTERM')
  rmSync(work, { recursive: true, force: true })
})

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
const served = { wrong: 0, faults: 16, error: 'function' }

function writeChecks(dir: string): void {
  writeFileSync(join(dir, 'esm.mjs'), `import { Userfaultfd, Region, Source, UffdError } from 'userfaultfd'\n${check}`)
  writeFileSync(join(dir, 'cjs.cjs'), `const { Userfaultfd, Region, Source, UffdError } = require('userfaultfd')\n${check}`)
}

/** The platform packages the installed package can require (pnpm keeps them beside it, not at the top). */
function installedPlatforms(dir: string): string[] {
  const from = createRequire(realpathSync(join(dir, 'node_modules', 'userfaultfd', 'package.json')))
  return PLATFORMS.filter((p) => {
    try {
      return Boolean(from.resolve(`userfaultfd-${p}/package.json`))
    } catch {
      return false
    }
  })
}

test.serial('pack:all packs the main package and the platform package built here; the main one lists all four at its version', (t) => {
  t.deepEqual(Object.keys(packed.platforms), ['linux-x64-gnu'])
  t.deepEqual(packed.missing.sort(), ['linux-arm64-gnu', 'linux-arm64-musl', 'linux-x64-musl'])
  const listing = execFileSync('tar', ['-tzf', packed.main], { encoding: 'utf8' }).split('\n').filter(Boolean)
  const files = listing.map((f) => f.replace(/^package\//, ''))
  t.true(files.includes('dist/index.mjs') && files.includes('dist/index.d.mts') && files.includes('dist/lib/worker-host.js'))
  t.true(files.includes('LICENSE'), 'the MIT licence ships')
  t.true(files.includes('bench/run.mjs') && files.includes('bench/baseline.c'), 'npx userfaultfd-bench ships its runner')
  t.false(
    files.some(
      (f) =>
        /^(crates|__test__|bench\/out|examples|npm|target)\//.test(f) ||
        (f.startsWith('scripts/') && f !== 'scripts/seaweed.mjs') || // the bench's object-store scenario starts SeaweedFS with it
        (/\.(node|rs|map|ts)$/.test(f) && !f.endsWith('.d.ts')),
    ),
    files.join(' '),
  )
  const pkg = JSON.parse(execFileSync('tar', ['-xzOf', packed.main, 'package/package.json'], { encoding: 'utf8' }))
  t.deepEqual(pkg.optionalDependencies, Object.fromEntries(PLATFORMS.map((p) => [`userfaultfd-${p}`, manifest.version])))
  t.is(pkg.scripts.install, undefined, 'no install script')
  t.is(pkg.scripts.postinstall, undefined)
  t.is(pkg.os, undefined, 'os, cpu and libc belong to the platform packages')
  t.is(pkg.cpu, undefined)
  t.truthy(pkg.repository?.url, 'provenance needs a repository')
  const platformPkg = JSON.parse(
    execFileSync('tar', ['-xzOf', packed.platforms['linux-x64-gnu'] as string, 'package/package.json'], { encoding: 'utf8' }),
  )
  t.deepEqual([platformPkg.os, platformPkg.cpu, platformPkg.libc], [['linux'], ['x64'], ['glibc']])
  const dist = execFileSync('tar', ['-xzOf', packed.main, 'package/dist/index.js'], { encoding: 'utf8' })
  t.notRegex(dist, /sourceMappingURL/, 'no source map that points at sources not shipped')
})

test.serial('@arethetypeswrong/cli and publint find nothing wrong with the tarball', (t) => {
  const attw = spawnSync(join(root, 'node_modules', '.bin', 'attw'), [packed.main, '--format', 'ascii'], { encoding: 'utf8' })
  t.is(attw.status, 0, attw.stdout + attw.stderr)
  t.regex(attw.stdout, /No problems found/)
  const publint = spawnSync(join(root, 'node_modules', '.bin', 'publint'), [packed.main], { encoding: 'utf8' })
  t.is(publint.status, 0, publint.stdout + publint.stderr)
  t.regex(publint.stdout, /All good!/, publint.stdout)
})

test.serial('npm install userfaultfd from the registry: faults from ESM and CommonJS, the command, a bench scenario', (t) => {
  t.throws(() => execFileSync('cargo', ['--version'], { env: cleanEnv(), stdio: 'ignore' }), undefined, 'no cargo on the PATH')
  const dir = freshProject('npm')
  t.log(run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=http', 'userfaultfd'], dir).trim())
  t.deepEqual(installedPlatforms(dir), ['linux-x64-gnu'], 'the platform package of this machine, and only it')
  t.false(existsSync(join(dir, 'node_modules', 'userfaultfd', 'crates')))
  writeChecks(dir)
  t.deepEqual(JSON.parse(run(process.execPath, ['esm.mjs'], dir)), served)
  t.deepEqual(JSON.parse(run(process.execPath, ['cjs.cjs'], dir)), served)
  t.is(run('npx', ['--no-install', 'userfaultfd', '--version'], dir).trim(), manifest.version)
  t.regex(
    run('npx', ['--no-install', 'userfaultfd', 'firecracker', '--help'], dir),
    /^usage: userfaultfd firecracker --socket PATH --mem FILE/,
  )
  const help = spawnSync('npx', ['--no-install', 'userfaultfd', '--help'], { cwd: dir, env: cleanEnv(), encoding: 'utf8' })
  t.is(help.status, 0)
  t.regex(help.stdout, /^usage: userfaultfd <command>/)
  const none = spawnSync('npx', ['--no-install', 'userfaultfd'], { cwd: dir, env: cleanEnv(), encoding: 'utf8' })
  t.is(none.status, 2, 'no command is a usage error')
  t.regex(none.stderr, /usage: userfaultfd <command>/)
  const unknown = spawnSync('npx', ['--no-install', 'userfaultfd', 'fircracker'], { cwd: dir, env: cleanEnv(), encoding: 'utf8' })
  t.is(unknown.status, 2)
  t.regex(unknown.stderr, /unknown command 'fircracker' \(did you mean 'firecracker'\?\)/)
  const bench = run('npx', ['--no-install', 'userfaultfd-bench', '--quick', '--scenario', 'latency-zero', '--reps', '1'], dir)
  t.log(bench.trim())
  t.regex(bench, /latency-zero/, bench)
})

test.serial('pnpm add userfaultfd from the registry: no build script to approve, faults served', (t) => {
  const dir = freshProject('pnpm')
  const out = run(tools.pnpm, ['add', 'userfaultfd', '--store-dir', join(work, 'pnpm-store')], dir)
  t.log(out.trim())
  t.notRegex(out, /Ignored build scripts|approve-builds/, out)
  t.deepEqual(installedPlatforms(dir), ['linux-x64-gnu'])
  writeChecks(dir)
  t.deepEqual(JSON.parse(run(process.execPath, ['esm.mjs'], dir)), served)
  t.deepEqual(JSON.parse(run(process.execPath, ['cjs.cjs'], dir)), served)
})

test.serial('bun add userfaultfd from the registry: faults served under Bun', (t) => {
  const dir = freshProject('bun')
  const out = run(bun, ['add', 'userfaultfd'], dir)
  t.log(out.trim())
  t.notRegex(out, /Blocked \d+ postinstall/, out)
  t.deepEqual(installedPlatforms(dir), ['linux-x64-gnu'])
  writeChecks(dir)
  t.deepEqual(JSON.parse(run(bun, ['esm.mjs'], dir)), served)
  t.deepEqual(JSON.parse(run(bun, ['cjs.cjs'], dir)), served)
  t.true(statSync(join(dir, 'node_modules', 'userfaultfd', 'package.json')).isFile())
})

/** A stand-in for a platform package that cannot be built here: its manifest, and a binary that is not one. */
function stubPlatformPackage(platform: string): string {
  const stage = join(work, 'stubs', platform)
  mkdirSync(stage, { recursive: true })
  writeFileSync(join(stage, 'package.json'), readFileSync(join(root, 'npm', platform, 'package.json')))
  writeFileSync(join(stage, `userfaultfd.${platform}.node`), `not a binary: a stand-in for ${platform}\n`)
  const listing = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', join(work, 'stubs')], stage)) as Array<{
    filename: string
  }>
  return join(work, 'stubs', listing[0]?.filename ?? '')
}

// A real user's registry has all four platform packages: each client must pick the one of this
// machine by os, cpu and libc and leave the others out.
test.serial('every platform package published: npm, pnpm and Bun install only the one for linux-x64-gnu', (t) => {
  const publisher = join(work, 'publisher')
  for (const platform of packed.missing) run('npm', ['publish', stubPlatformPackage(platform), '--tag', 'latest'], publisher)
  const installs: Array<[string, string[], string]> = [
    ['npm', ['install', '--no-audit', '--no-fund', 'userfaultfd'], process.execPath],
    [tools.pnpm, ['add', 'userfaultfd', '--store-dir', join(work, 'pnpm-store-all')], process.execPath],
    [bun, ['add', 'userfaultfd'], bun],
  ]
  for (const [client, args, runtime] of installs) {
    const dir = freshProject(`all-${client.split('/').pop()}`)
    run(client, args, dir)
    t.deepEqual(installedPlatforms(dir), ['linux-x64-gnu'], client)
    writeChecks(dir)
    t.deepEqual(JSON.parse(run(runtime, ['esm.mjs'], dir)), served, client)
  }
})
