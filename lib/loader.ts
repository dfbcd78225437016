// Finds and loads the native binding: an explicit path, the binary built in this package, then the
// prebuilt package for this platform. Every failure is kept, so the one error thrown says why each
// candidate did not load.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type * as Binding from './binding'

export type NativeBinding = typeof Binding

/** The environment variable that names a `.node` file to load instead of the packaged one. */
export const NATIVE_PATH_VARIABLE = 'USERFAULTFD_NATIVE_PATH'

const packageRoot = join(__dirname, '..', '..')

function libc(): 'gnu' | 'musl' {
  try {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
    if (report?.header?.glibcVersionRuntime) return 'gnu'
  } catch {
    // Some runtimes have no process.report; fall through to the file check.
  }
  return existsSync('/etc/alpine-release') || existsSync('/lib/ld-musl-x86_64.so.1') || existsSync('/lib/ld-musl-aarch64.so.1')
    ? 'musl'
    : 'gnu'
}

/** The napi-rs platform name of this process, e.g. `linux-x64-gnu`. */
export function platformName(): string {
  return `${process.platform}-${process.arch}-${libc()}`
}

/** The platforms the package publishes a prebuilt binary for, as npm packages `userfaultfd-<platform>`. */
export const PREBUILT_PLATFORMS: readonly string[] = ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl']

/** Whether the package at `root` is a checkout of the repository (its Rust sources are there). */
export function isSourceCheckout(root: string): boolean {
  return existsSync(join(root, 'crates', 'uffd-node', 'Cargo.toml'))
}

/** Where the binding was looked for and what the user can do about it. */
export interface LoadFailure {
  /** The napi-rs platform name, e.g. `linux-x64-gnu`. */
  platform: string
  /** Whether the package is a checkout of the repository rather than an install from npm. */
  sourceCheckout: boolean
  /** Why each candidate did not load. */
  failures: readonly Error[]
}

/**
 * The message of the error thrown when no binding loads. Installed from npm, it names the platform
 * package to install, or says that none is published for the platform (an installed package has no
 * Rust sources and no `build:native` script); only in a checkout of the repository does it say to
 * run `npm run build:native`.
 */
export function loadFailureMessage({ platform, sourceCheckout, failures }: LoadFailure): string {
  const pkg = `userfaultfd-${platform}`
  const pointAtFile = `or point ${NATIVE_PATH_VARIABLE} at a userfaultfd.${platform}.node you built`
  let advice: string
  if (sourceCheckout) {
    advice =
      'This is a checkout of the repository: build the binding with `npm run build:native` ' +
      `(needs Rust and libclang: apt-get install -y libclang-dev), ${pointAtFile}.`
  } else if (PREBUILT_PLATFORMS.includes(platform)) {
    advice =
      `Install the package ${pkg}, its prebuilt binary (\`npm install ${pkg}\`): npm installs it on its own as an optional ` +
      'dependency, unless optional dependencies were left out (--omit=optional, --no-optional, or a lockfile ' +
      `made on another platform). Else build the binding from a clone of the repository (its README says how), ${pointAtFile}.`
  } else {
    advice =
      `No prebuilt binary is published for ${platform} (only for ${PREBUILT_PLATFORMS.join(', ')}): build the ` +
      `binding from a clone of the repository (its README says how; it needs Rust and libclang), ${pointAtFile}.`
  }
  return `userfaultfd: no native binding loads on ${platform}. ${advice} Tried:\n  ${failures.map((f) => f.message).join('\n  ')}`
}

export function loadBinding(): NativeBinding {
  if (process.platform !== 'linux') {
    throw new Error(
      `userfaultfd is a Linux kernel interface and cannot work on ${process.platform}: ` +
        'run this program on Linux 5.7 or later (a container or virtual machine on other systems).',
    )
  }
  const platform = platformName()
  const candidates: string[] = []
  const override = process.env[NATIVE_PATH_VARIABLE]
  if (override) candidates.push(override)
  candidates.push(join(packageRoot, `userfaultfd.${platform}.node`), `userfaultfd-${platform}`)
  const failures: Error[] = []
  for (const candidate of candidates) {
    try {
      return require(candidate) as NativeBinding
    } catch (error) {
      failures.push(new Error(`${candidate}: ${(error as Error).message}`, { cause: error }))
    }
  }
  throw new Error(loadFailureMessage({ platform, sourceCheckout: isSourceCheckout(packageRoot), failures }), { cause: failures })
}

export const native: NativeBinding = loadBinding()
