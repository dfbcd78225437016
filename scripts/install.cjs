// `npm install` runs this: keep a native binding that loads (a prebuilt platform package, or one
// built here before), else build one from the Rust sources (needs cargo and libclang).
const { spawnSync } = require('node:child_process')
const { existsSync, copyFileSync } = require('node:fs')
const { join } = require('node:path')

const root = join(__dirname, '..')

function platformName() {
  let glibc = false
  try {
    glibc = Boolean(process.report.getReport().header.glibcVersionRuntime)
  } catch {}
  return `${process.platform}-${process.arch}-${glibc ? 'gnu' : 'musl'}`
}

function loads(file) {
  const probe = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)})`], { stdio: 'ignore' })
  return probe.status === 0
}

function run(command, args) {
  console.log(`userfaultfd: ${command} ${args.join(' ')}`)
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' })
  if (result.error) throw result.error
  if (result.status !== 0) throw new Error(`${command} exited with ${result.status}`)
}

function main() {
  if (process.platform !== 'linux') {
    console.log(`userfaultfd: ${process.platform} has no userfaultfd; the package will refuse to load there.`)
    return
  }
  if (process.env.USERFAULTFD_SKIP_BUILD) return
  const platform = platformName()
  const local = join(root, `userfaultfd.${platform}.node`)
  const building = existsSync(join(root, 'crates', 'uffd-node', 'Cargo.toml'))
  if (!building) {
    try {
      if (loads(require.resolve(`userfaultfd-${platform}`))) return
    } catch {}
    if (existsSync(local) && loads(local)) return
    // Not fatal here: importing the package then fails with one error that says what to install.
    console.warn(`userfaultfd: no prebuilt binding for ${platform} (install userfaultfd-${platform}) and no sources to build one from.`)
    return
  }
  // A source checkout: build, so that the binding matches the sources (cargo makes this quick).
  const cli = join(root, 'node_modules', '.bin', 'napi')
  try {
    if (existsSync(cli)) {
      run('npm', ['run', '-s', 'build:native'])
    } else {
      run('cargo', ['build', '--release', '-p', 'uffd-node'])
      copyFileSync(join(root, 'target', 'release', 'libuffd_node.so'), local)
    }
  } catch (error) {
    console.error(
      `userfaultfd: building the native binding failed (${error.message}). It needs Rust (rustup.rs) and ` +
        'libclang (Debian/Ubuntu: apt-get install -y libclang-dev).',
    )
    process.exit(1)
  }
}

main()
