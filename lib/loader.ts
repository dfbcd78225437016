// Finds and loads the binding (the napi-rs addon of crates/uffd-node): an explicit path, the binary built in this package, then the
// prebuilt package for this platform. Every failure is kept, so the one error thrown says why each
// candidate did not load.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type * as BindingModule from './binding'

/** The binding's module: the napi-rs classes and functions of crates/uffd-node. */
export type Binding = typeof BindingModule

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

/** The prebuilt platform package that is installed but whose binary did not load. */
export interface InstalledButUnloadable {
  /** The `.node` file the platform package holds. */
  path: string
  /** The error of loading it (the dynamic loader's message, e.g. a missing `GLIBC_2.34`). */
  error: Error
}

/** Where the binding was looked for and what the user can do about it. */
export interface LoadFailure {
  /** The napi-rs platform name, e.g. `linux-x64-gnu`. */
  platform: string
  /** Whether the package is a checkout of the repository rather than an install from npm. */
  sourceCheckout: boolean
  /** Why each candidate did not load. */
  failures: readonly Error[]
  /** Set when the platform package is installed but its binary does not load on this system. */
  installed?: InstalledButUnloadable | undefined
  /** The glibc of this process (e.g. `2.31`), when it has one: said next to a glibc the binary needs. */
  glibc?: string | undefined
}

/** The newest glibc symbol version a dynamic loader's error says is missing, e.g. `2.34`. */
function missingGlibc(message: string): string | undefined {
  const versions = [...message.matchAll(/GLIBC_(\d+\.\d+(?:\.\d+)?)' not found/g)].map((m) => m[1] as string)
  return versions.sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).pop()
}

/**
 * The message of the error thrown when no binding loads: which platform package was looked for, why
 * each candidate did not load, and what to do. Installed from npm, it tells apart a platform package
 * that is not installed (install it) from one that is installed but whose binary this system cannot
 * load (installing it again will not help: the dynamic loader's error says why, e.g. a glibc older
 * than the binary needs); only in a checkout of the repository does it say to run
 * `npm run build:native`.
 */
export function loadFailureMessage({ platform, sourceCheckout, failures, installed, glibc }: LoadFailure): string {
  const pkg = `userfaultfd-${platform}`
  const pointAtFile = `or point ${NATIVE_PATH_VARIABLE} at a userfaultfd.${platform}.node you built`
  const fromSource = `build the binding from a clone of the repository (its README says how; it needs Rust and libclang), ${pointAtFile}`
  let advice: string
  if (sourceCheckout) {
    advice =
      'This is a checkout of the repository: build the binding with `npm run build:native` ' +
      `(needs Rust and libclang: apt-get install -y libclang-dev), ${pointAtFile}.`
  } else if (installed) {
    const needs = missingGlibc(installed.error.message)
    const why = needs
      ? `it needs glibc ${needs} or later${glibc ? `, and this system has glibc ${glibc}` : ''}`
      : 'the dynamic loader refused it (its error is below)'
    advice =
      `The package ${pkg} is installed (${installed.path}) but its binary does not load on this system: ${why}. ` +
      `Installing it again will not help: run on a system it supports, or ${fromSource}.`
  } else if (PREBUILT_PLATFORMS.includes(platform)) {
    advice =
      `The package ${pkg}, its prebuilt binary, is not installed. Install it (\`npm install ${pkg}\`): npm installs it on its own as an optional ` +
      'dependency, unless optional dependencies were left out (--omit=optional, --no-optional, or a lockfile ' +
      `made on another platform). Else ${fromSource}.`
  } else {
    advice = `No prebuilt binary is published for ${platform} (only for ${PREBUILT_PLATFORMS.join(', ')}): ${fromSource}.`
  }
  return `userfaultfd: no native binding loads on ${platform}. ${advice} Tried:\n  ${failures.map((f) => f.message).join('\n  ')}`
}

function glibcVersion(): string | undefined {
  try {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
    return report?.header?.glibcVersionRuntime
  } catch {
    return undefined
  }
}

export function loadBinding(): Binding {
  if (process.platform !== 'linux') {
    throw new Error(
      `userfaultfd is a Linux kernel interface and cannot work on ${process.platform}: ` +
        'run this program on Linux 5.7 or later (a container or virtual machine on other systems).',
    )
  }
  const platform = platformName()
  const failures: Error[] = []
  const attempt = (label: string, file: string): Binding | Error => {
    try {
      return require(file) as Binding
    } catch (error) {
      const failure = new Error(`${label}: ${(error as Error).message}`, { cause: error })
      failures.push(failure)
      return failure
    }
  }
  const override = process.env[NATIVE_PATH_VARIABLE]
  if (override) {
    const loaded = attempt(`${NATIVE_PATH_VARIABLE}=${override}`, override)
    if (!(loaded instanceof Error)) return loaded
  }
  // A binding built in this package: a checkout's `npm run build:native` writes it here.
  const local = join(packageRoot, `userfaultfd.${platform}.node`)
  if (existsSync(local)) {
    const loaded = attempt(local, local)
    if (!(loaded instanceof Error)) return loaded
  } else {
    failures.push(new Error(`${local}: not built here`))
  }
  // The prebuilt platform package: not installed, or installed but unloadable, are told apart.
  const pkg = `userfaultfd-${platform}`
  let installed: InstalledButUnloadable | undefined
  let resolved: string | undefined
  try {
    resolved = require.resolve(pkg)
  } catch (error) {
    failures.push(new Error(`${pkg}: not installed (${(error as Error).message.split('\n')[0]})`, { cause: error }))
  }
  if (resolved) {
    const loaded = attempt(`${pkg} (${resolved})`, resolved)
    if (!(loaded instanceof Error)) return loaded
    installed = { path: resolved, error: loaded }
  }
  throw new Error(
    loadFailureMessage({ platform, sourceCheckout: isSourceCheckout(packageRoot), failures, installed, glibc: glibcVersion() }),
    { cause: failures },
  )
}

export const binding: Binding = loadBinding()
