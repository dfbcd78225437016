// `npm run pack:all`: writes into dist-packages/ the tarballs a release publishes, as `npm pack` makes
// them: the main package and each platform package (npm/<platform>/) whose binary was built here
// (userfaultfd.<platform>.node in the repository root; on a linux-x64-gnu machine, that one only).
// Prints one JSON line: { main, platforms: { <platform>: tarball }, missing: [platforms not built] }.
//
//   node scripts/pack-all.cjs [--out DIR] [--no-build]
//
// It builds the JavaScript first (`npm run build:ts`) unless --no-build (the tests pack what
// `npm run build` made, without rewriting dist/ under the other test files), then packs with
// --ignore-scripts; the native binaries are never built here.
const { execFileSync } = require('node:child_process')
const { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } = require('node:fs')
const { join, resolve } = require('node:path')
const { parseArgs } = require('node:util')

const root = join(__dirname, '..')
const { values: options } = parseArgs({ options: { out: { type: 'string' }, 'no-build': { type: 'boolean', default: false } } })
const out = options.out ? resolve(options.out) : join(root, 'dist-packages')
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))

function pack(dir) {
  const json = execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', out], {
    cwd: dir,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  return join(out, JSON.parse(json)[0].filename)
}

function fail(message) {
  console.error(`pack:all: ${message}`)
  process.exit(1)
}

rmSync(join(out, '.stage'), { recursive: true, force: true })
mkdirSync(out, { recursive: true })
for (const file of readdirSync(out)) if (file.endsWith('.tgz')) rmSync(join(out, file))
const platforms = {}
const missing = []
for (const platform of readdirSync(join(root, 'npm')).sort()) {
  const dir = join(root, 'npm', platform)
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
  if (pkg.version !== manifest.version) fail(`${pkg.name} is at ${pkg.version}, the main package at ${manifest.version}`)
  if (manifest.optionalDependencies?.[pkg.name] !== manifest.version)
    fail(`the main package does not list ${pkg.name}@${manifest.version} in optionalDependencies`)
  const binary = `userfaultfd.${platform}.node`
  if (!existsSync(join(root, binary))) {
    missing.push(platform)
    continue
  }
  // npm/<platform>/ holds only the manifest; the tarball is made from a copy with the binary and the licence.
  const stage = join(out, '.stage', platform)
  mkdirSync(stage, { recursive: true })
  for (const file of readdirSync(dir)) copyFileSync(join(dir, file), join(stage, file))
  copyFileSync(join(root, binary), join(stage, binary))
  copyFileSync(join(root, 'LICENSE'), join(stage, 'LICENSE'))
  platforms[platform] = pack(stage)
}
rmSync(join(out, '.stage'), { recursive: true, force: true })
if (!options['no-build']) execFileSync('npm', ['run', '-s', 'build:ts'], { cwd: root, stdio: 'inherit' })
const main = pack(root)
console.log(JSON.stringify({ main, platforms, missing }))
