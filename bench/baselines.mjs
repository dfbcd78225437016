// The baselines of run.mjs, built for the run: the C handler (bench/baseline.c, with the system
// compiler, into the run's temporary folder) and the Rust one (bench/rust-baseline/, by cargo, in a
// checkout). What does not build is skipped, said why, and the run goes on without it.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { firstLine } from './format.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
const BASELINE_SRC = join(HERE, 'baseline.c')
const RUST_CRATE = join(HERE, 'rust-baseline')
const RUST_PACKAGE = 'uffd-rust-baseline'
const MiB = 1024 * 1024

/** Why a build command failed (undefined if it worked). */
function buildError(name, result) {
  if (result.error) return result.error.message
  if (result.status === 0) return undefined
  // cargo's progress comes before its errors: keep the end.
  const stderr = result.stderr.trim().split('\n').slice(-12).join('\n')
  return `${name} exited with ${result.status ?? result.signal}: ${stderr}`
}

/** The line of a build's output that says what went wrong, for a one-line `skipped:`. */
function errorLine(error) {
  return (error.split('\n').find((line) => /error/i.test(line)) ?? firstLine(error)).trim()
}

/** The C baseline, built into the temporary folder; undefined (skipped, said why) without a compiler that builds it. */
export function buildC({ work, skip, warnings }) {
  const cc = process.env.CC || 'cc'
  const bin = join(work, 'baseline')
  const build = spawnSync(cc, ['-O2', '-pthread', '-o', bin, BASELINE_SRC], { encoding: 'utf8' })
  const leftOut = 'its rows and the ratios to it are left out'
  if (build.error?.code === 'ENOENT') {
    skip('the C baseline', `no C compiler (${cc}) on PATH; ${leftOut} (install gcc or clang, or set CC)`)
    return undefined
  }
  const error = buildError(cc, build)
  if (error) {
    skip('the C baseline', `${cc} could not build bench/baseline.c (${errorLine(error)}); ${leftOut}`)
    warnings.push(`the C baseline did not build: ${error}`)
    return undefined
  }
  return { name: 'C baseline', bin }
}

/** The Rust baseline, or undefined (skipped, said why) when it cannot be built. */
export function buildRust({ root, skip, warnings }) {
  const leftOut = (why) => skip('the Rust baseline', why)
  if (!existsSync(join(RUST_CRATE, 'Cargo.toml')) || !existsSync(join(RUST_CRATE, 'src', 'main.rs'))) {
    leftOut('its sources (bench/rust-baseline/) are not in the published package; a checkout of the repository with cargo runs it')
    return undefined
  }
  process.stderr.write(`building the Rust baseline: cargo build --release -p ${RUST_PACKAGE}\n`)
  const build = spawnSync('cargo', ['build', '--release', '-p', RUST_PACKAGE], { cwd: root, encoding: 'utf8' })
  if (build.error?.code === 'ENOENT') {
    leftOut('cargo is not on PATH')
    return undefined
  }
  const error = buildError('cargo build', build)
  if (error) {
    leftOut(`cargo build failed (${errorLine(error)}); the whole error is under Warnings`)
    warnings.push(`the Rust baseline did not build: ${error}`)
    return undefined
  }
  // The workspace's target directory (CARGO_TARGET_DIR and cargo's configuration included).
  let targetDir = process.env.CARGO_TARGET_DIR
  const metadata = spawnSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], {
    cwd: root,
    encoding: 'utf8',
    maxBuffer: 64 * MiB,
  })
  try {
    targetDir = JSON.parse(metadata.stdout).target_directory
  } catch {
    // Keep CARGO_TARGET_DIR, if any.
  }
  const bin = targetDir && resolve(root, targetDir, 'release', RUST_PACKAGE)
  if (!bin || !existsSync(bin)) {
    leftOut(`cargo built it but its binary was not found (${bin ?? buildError('cargo metadata', metadata) ?? 'no target directory'})`)
    return undefined
  }
  return { name: 'Rust baseline', bin }
}
