// The loader as an install from a registry meets it: the package (dist/ and package.json, no Rust
// sources) in a project's node_modules, its platform package missing, present, or present with a
// binary that does not load. Each case runs in a fresh Node.js process that imports the package.

import { spawnSync } from 'node:child_process'
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'

const root = join(__dirname, '..', '..', '..')
const platform = 'linux-x64-gnu'
const binary = `userfaultfd.${platform}.node`
const work = mkdtempSync(join(tmpdir(), 'uffd-loader-'))
test.after.always(() => rmSync(work, { recursive: true, force: true }))

/** A project with the package installed as a registry install lays it out; `binaryFile` fills its platform package. */
function project(name: string, binaryFile?: (path: string) => void): string {
  const dir = join(work, name)
  const pkg = join(dir, 'node_modules', 'userfaultfd')
  mkdirSync(pkg, { recursive: true })
  cpSync(join(root, 'dist'), join(pkg, 'dist'), { recursive: true })
  copyFileSync(join(root, 'package.json'), join(pkg, 'package.json'))
  if (binaryFile) {
    const platformDir = join(dir, 'node_modules', `userfaultfd-${platform}`)
    mkdirSync(platformDir, { recursive: true })
    copyFileSync(join(root, 'npm', platform, 'package.json'), join(platformDir, 'package.json'))
    binaryFile(join(platformDir, binary))
  }
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }))
  return dir
}

function load(dir: string, env: Record<string, string> = {}) {
  const { USERFAULTFD_NATIVE_PATH: _, ...rest } = process.env
  return spawnSync(process.execPath, ['-e', "require('userfaultfd'); console.log('loaded')"], {
    cwd: dir,
    encoding: 'utf8',
    env: { ...rest, ...env },
    timeout: 60_000,
  })
}

test('the platform package installed: the package loads its binary', (t) => {
  const dir = project('installed', (path) => copyFileSync(join(root, binary), path))
  const result = load(dir)
  t.is(result.stdout.trim(), 'loaded', result.stderr)
})

test('the platform package not installed: the message names it, says it is not installed, and how to install it', (t) => {
  const result = load(project('missing'))
  t.not(result.status, 0)
  t.regex(result.stderr, new RegExp(`The package userfaultfd-${platform}, its prebuilt binary, is not installed`))
  t.regex(result.stderr, new RegExp(`\`npm install userfaultfd-${platform}\``))
  t.regex(result.stderr, new RegExp(`userfaultfd-${platform}: not installed \\(Cannot find module`))
  t.notRegex(result.stderr, /build:native/)
})

test('the platform package installed but its binary does not load: the real dlopen error, and no advice to install it', (t) => {
  const dir = project('broken', (path) => writeFileSync(path, 'not an ELF file\n'.repeat(300)))
  const result = load(dir)
  t.not(result.status, 0)
  const installedAt = join(dir, 'node_modules', `userfaultfd-${platform}`, binary)
  t.true(
    result.stderr.includes(`The package userfaultfd-${platform} is installed (${installedAt}) but its binary does not load`),
    result.stderr,
  )
  t.regex(result.stderr, /invalid ELF header/, 'the dynamic loader says why')
  t.regex(result.stderr, /Installing it again will not help/)
  t.notRegex(result.stderr, /npm install userfaultfd-|is not installed/)
})

test('USERFAULTFD_NATIVE_PATH at a file that does not load: its error is listed, and the platform package still loads', (t) => {
  const dir = project('override', (path) => copyFileSync(join(root, binary), path))
  const bad = join(work, 'bad.node')
  writeFileSync(bad, 'nope')
  t.is(load(dir, { USERFAULTFD_NATIVE_PATH: bad }).stdout.trim(), 'loaded')
  const bare = load(project('override-bare'), { USERFAULTFD_NATIVE_PATH: bad })
  t.true(bare.stderr.includes(`USERFAULTFD_NATIVE_PATH=${bad}: `), bare.stderr)
})

// A binary built against a newer glibc than the system's cannot be made to fail here (this system's
// glibc is new), so the message is checked from the dynamic loader's own words.
test('a binary that needs a newer glibc: the message says which glibc it needs and which the system has', (t) => {
  const loader = require(join(root, 'dist', 'lib', 'loader.js')) as typeof import('../lib/loader')
  const error = new Error(
    "/app/node_modules/userfaultfd-linux-x64-gnu/userfaultfd.linux-x64-gnu.node: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.33' not found (required by x); version `GLIBC_2.34' not found (required by x)",
  )
  const message = loader.loadFailureMessage({
    platform,
    sourceCheckout: false,
    failures: [error],
    installed: { path: '/app/node_modules/userfaultfd-linux-x64-gnu/userfaultfd.linux-x64-gnu.node', error },
    glibc: '2.31',
  })
  t.regex(
    message,
    /is installed \(\/app\/node_modules\/userfaultfd-linux-x64-gnu\/userfaultfd\.linux-x64-gnu\.node\) but its binary does not load/,
  )
  t.regex(message, /it needs glibc 2\.34 or later, and this system has glibc 2\.31/)
  t.regex(message, /GLIBC_2\.34' not found/, 'the dynamic loader error is kept')
  t.notRegex(message, /npm install userfaultfd-/)
})

// The loader's message, in both situations a user meets it.
const loader = require(join(__dirname, '..', '..', '..', 'dist', 'lib', 'loader.js')) as typeof import('../lib/loader')

const tried = [new Error('userfaultfd-linux-x64-gnu: Cannot find module')]

test('installed from npm, a missing binding names the platform package to install, not npm run build:native', (t) => {
  const message = loader.loadFailureMessage({ platform: 'linux-x64-gnu', sourceCheckout: false, failures: tried })
  t.regex(message, /`npm install userfaultfd-linux-x64-gnu`/)
  t.regex(message, /--omit=optional/)
  t.notRegex(message, /build:native/)
  t.regex(message, /USERFAULTFD_NATIVE_PATH/)
  t.regex(message, /Tried:\n {2}userfaultfd-linux-x64-gnu: Cannot find module/)
  const unpublished = loader.loadFailureMessage({ platform: 'linux-riscv64-gnu', sourceCheckout: false, failures: tried })
  t.regex(unpublished, /No prebuilt binary is published for linux-riscv64-gnu \(only for linux-x64-gnu, /)
  t.notRegex(unpublished, /npm install userfaultfd-linux-riscv64-gnu|build:native/)
})

test('in a checkout of the repository, a missing binding says to run npm run build:native', (t) => {
  const message = loader.loadFailureMessage({ platform: 'linux-x64-gnu', sourceCheckout: true, failures: tried })
  t.regex(message, /`npm run build:native`/)
  t.regex(message, /libclang/)
  t.notRegex(message, /npm install userfaultfd-/)
  t.true(loader.isSourceCheckout(join(__dirname, '..', '..', '..')), 'this worktree is a checkout')
  const installed = mkdtempSync(join(tmpdir(), 'uffd-installed-'))
  t.false(loader.isSourceCheckout(installed), 'a package without crates/ is an install')
  rmSync(installed, { recursive: true })
})
