// `npm run prepare`: npm runs it after `npm install` in a checkout of the repository (never when the
// package is installed from a registry) and before `npm pack` and `npm publish`. In a checkout it
// builds the native binding (`npm run build:native`) and then the JavaScript (`npm run build:ts`);
// packing and publishing need only the JavaScript (the binaries come from the platform packages).
// USERFAULTFD_SKIP_BUILD=1 leaves the native build out (e.g. to install only the tooling).
const { spawnSync } = require('node:child_process')
const { existsSync } = require('node:fs')
const { join } = require('node:path')

const root = join(__dirname, '..')

function run(script) {
  const result = spawnSync('npm', ['run', '-s', script], { cwd: root, stdio: 'inherit' })
  if (result.error) throw result.error
  return result.status === 0
}

const packing = ['pack', 'publish'].includes(process.env.npm_command ?? '')
const checkout = existsSync(join(root, 'crates', 'uffd-node', 'Cargo.toml'))
if (checkout && !packing && !process.env.USERFAULTFD_SKIP_BUILD) {
  if (!run('build:native')) {
    console.error(
      'userfaultfd: building the native binding failed. It needs Rust (rustup.rs), a C compiler and libclang ' +
        '(Debian/Ubuntu: apt-get install -y libclang-dev); see the README, Set-up.',
    )
    process.exit(1)
  }
}
if (!run('build:ts')) process.exit(1)
