// Installs what the registry test (__test__/registry.spec.ts) and the Azure tests
// (__test__/azure.spec.ts) need and a checkout has not, into the ignored .tools/, from the registry
// npm is configured with: Verdaccio (an npm registry run on loopback) in .tools/verdaccio, pnpm in
// .tools/pnpm, Azurite (Azure's storage emulator, run on loopback) with Azure's own blob client
// (to make containers) in .tools/azurite. Bun comes with the devDependencies.
// Verdaccio 5: version 6 refuses to start on Node.js 20, which the suite runs on.
// Idempotent: a tool already there at its version is kept. `node scripts/test-tools.cjs` prints the
// paths of the commands as JSON.
const { execFileSync } = require('node:child_process')
const { existsSync, mkdirSync, readFileSync, writeFileSync } = require('node:fs')
const { join } = require('node:path')

const root = join(__dirname, '..')
const TOOLS = {
  verdaccio: { spec: 'verdaccio@5.33.0', bin: 'verdaccio' },
  pnpm: { spec: 'pnpm@12.24.0', bin: 'pnpm' },
  azurite: { spec: 'azurite@3.35.0 @azure/storage-blob@12.32.0', bin: 'azurite-blob' },
}

function install(name, { spec, bin }) {
  const dir = join(root, '.tools', name)
  const command = join(dir, 'node_modules', '.bin', bin)
  const stamp = join(dir, 'installed')
  if (existsSync(command) && existsSync(stamp) && readFileSync(stamp, 'utf8') === spec) return command
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ name: `tools-${name}`, private: true }, null, 2)}\n`)
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--no-save', '--loglevel=error', ...spec.split(' ')], {
    cwd: dir,
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  writeFileSync(stamp, spec)
  return command
}

const paths = Object.fromEntries(Object.entries(TOOLS).map(([name, tool]) => [name, install(name, tool)]))
if (require.main === module) console.log(JSON.stringify(paths))
module.exports = { paths }
