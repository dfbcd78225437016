// `npm run build:native`: builds the native binding into ./userfaultfd.<platform>.node and its types
// into lib/binding.d.ts, stripped (by `strip` after the build: napi's --strip, `-C link-arg=-s`, left
// the symbol table in with the cross toolchain's linker).
//
// On a Linux x64 host, a glibc target (x86_64-unknown-linux-gnu by default, or the --target given)
// is built as napi-rs builds its own packages: `napi build --use-napi-cross`, with the gcc and the
// glibc 2.17 sysroot of @napi-rs/cross-toolchain (from the npm registry, unpacked by napi into
// ~/.napi-rs/cross-toolchain/). The binary then needs no glibc symbol newer than 2.17, so the one
// every test loads is the one a release ships. USERFAULTFD_BUILD_TOOLCHAIN=host builds with the
// host's compiler and glibc instead (as do other hosts and targets: musl targets go through the
// release workflow's `napi build -x`).
//
// The sysroot's kernel headers (Linux 3.10) predate userfaultfd, so the bindgen step and the C file
// of the userfaultfd-sys crate find no linux/userfaultfd.h there. That one header (it depends only
// on linux/types.h and linux/ioctl.h, which the sysroot has, for the target's own architecture) is
// copied from the host's kernel headers (linux-libc-dev: /usr/include/linux/userfaultfd.h, or
// USERFAULTFD_UAPI_HEADER) into target/uapi-extra/linux/, which bindgen and the C compiler search
// after the sysroot (-idirafter): every other header still comes from the sysroot.
const { spawnSync } = require('node:child_process')
const { copyFileSync, existsSync, mkdirSync } = require('node:fs')
const { homedir } = require('node:os')
const { dirname, join } = require('node:path')

const root = join(__dirname, '..')
const args = process.argv.slice(2)
const targetAt = args.indexOf('--target')
const target = targetAt >= 0 ? args[targetAt + 1] : hostTriple()

function hostTriple() {
  const out = spawnSync('rustc', ['-vV'], { encoding: 'utf8' })
  if (out.error || out.status !== 0) fail(`rustc -vV failed (${out.error?.message ?? out.stderr}): the build needs Rust (rustup.rs)`)
  return /^host: (\S+)$/m.exec(out.stdout)?.[1]
}

function fail(message) {
  console.error(`build:native: ${message}`)
  process.exit(1)
}

const napiArgs = [
  'build',
  '--platform',
  '--release',
  '--manifest-path',
  'crates/uffd-node/Cargo.toml',
  '--package-json-path',
  'package.json',
  '--output-dir',
  '.',
  '--no-js',
  '--dts',
  'lib/binding.d.ts',
  '--no-dts-cache',
]
const env = { ...process.env }
let strip = 'strip'
const cross =
  process.platform === 'linux' &&
  process.arch === 'x64' &&
  /^(x86_64|aarch64)-unknown-linux-gnu$/.test(target ?? '') &&
  process.env.USERFAULTFD_BUILD_TOOLCHAIN !== 'host'
if (cross) {
  const header = process.env.USERFAULTFD_UAPI_HEADER ?? '/usr/include/linux/userfaultfd.h'
  if (!existsSync(header)) fail(`${header} is missing: install the kernel headers (Debian/Ubuntu: apt-get install -y linux-libc-dev)`)
  const extra = join(root, 'target', 'uapi-extra')
  mkdirSync(join(extra, 'linux'), { recursive: true })
  copyFileSync(header, join(extra, 'linux', 'userfaultfd.h'))
  // Where napi unpacks the toolchain: ~/.napi-rs/cross-toolchain/<version>/<target>/<target>/sysroot.
  const cli = dirname(require.resolve('@napi-rs/cli/package.json', { paths: [root] }))
  const { version } = require(require.resolve('@napi-rs/cross-toolchain/package.json', { paths: [cli] }))
  const sysroot = join(homedir(), '.napi-rs', 'cross-toolchain', version, target, target, 'sysroot')
  // napi sets BINDGEN_EXTRA_CLANG_ARGS to --sysroot only when it is unset; set both here.
  env.BINDGEN_EXTRA_CLANG_ARGS = `--sysroot=${sysroot} -idirafter ${extra} ${process.env.BINDGEN_EXTRA_CLANG_ARGS ?? ''}`.trim()
  env.TARGET_CFLAGS = `-idirafter ${extra} ${process.env.TARGET_CFLAGS ?? ''}`.trim()
  strip = join(dirname(dirname(sysroot)), 'bin', `${target}-strip`)
  napiArgs.push('--use-napi-cross')
  if (targetAt < 0) napiArgs.push('--target', target)
}
const napi = join(root, 'node_modules', '.bin', 'napi')
const result = spawnSync(napi, [...napiArgs, ...args], { cwd: root, env, stdio: 'inherit' })
if (result.error) fail(result.error.message)
if (result.status !== 0) process.exit(result.status ?? 1)
// The binary napi wrote: userfaultfd.<platform>.node, e.g. userfaultfd.linux-x64-gnu.node.
const [arch, , os, abi] = (target ?? '').split('-')
const platform = `${os}-${{ x86_64: 'x64', aarch64: 'arm64' }[arch] ?? arch}-${abi}`
const output = join(root, `userfaultfd.${platform}.node`)
if (!existsSync(output)) fail(`napi build wrote no ${output}`)
const stripped = spawnSync(strip, ['--strip-all', output], { stdio: 'inherit' })
if (stripped.error || stripped.status !== 0) fail(`${strip} --strip-all ${output} failed: ${stripped.error?.message ?? stripped.status}`)
