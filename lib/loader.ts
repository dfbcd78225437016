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
  throw new Error(
    `userfaultfd: no native binding loads on ${platform}. Install the package userfaultfd-${platform}, ` +
      `build from source with \`npm run build:native\` (needs Rust and libclang), or point ` +
      `${NATIVE_PATH_VARIABLE} at a userfaultfd.${platform}.node. Tried:\n  ${failures.map((f) => f.message).join('\n  ')}`,
    { cause: failures },
  )
}

export const native: NativeBinding = loadBinding()
