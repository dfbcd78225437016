// The binary the tests load is the one a release ships for linux-x64-gnu (npm run build:native builds
// it with napi-rs's cross toolchain): it must load on glibc 2.17 (Amazon Linux 2, RHEL 8, Debian 11,
// Ubuntu 20.04 and older), so it names no glibc symbol version newer than 2.17; and it is stripped.
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import test from 'ava'

const root = join(__dirname, '..', '..', '..')
const binary = join(root, 'userfaultfd.linux-x64-gnu.node')

const newer = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true }) > 0

test('the linux-x64-gnu binary needs no glibc newer than 2.17', (t) => {
  // The version needs the dynamic loader checks at load time (.gnu.version_r), as readelf lists them.
  const needs = execFileSync('readelf', ['-V', '-W', binary], { encoding: 'utf8', maxBuffer: 64 << 20 })
  const versions = [...new Set([...needs.matchAll(/Name: GLIBC_(\d+(?:\.\d+)+)/g)].map((m) => m[1] as string))]
  t.true(versions.length > 0, 'it names glibc versions at all')
  const newest = versions.reduce((a, b) => (newer(b, a) ? b : a))
  t.false(newer(newest, '2.17'), `the newest glibc symbol version is ${newest}: ${versions.join(' ')}`)
})

test('the linux-x64-gnu binary is stripped (no symbol table beyond the dynamic one)', (t) => {
  const sections = execFileSync('readelf', ['-S', '-W', binary], { encoding: 'utf8' })
  t.notRegex(sections, /\s\.symtab\s/)
  t.notRegex(sections, /\s\.debug_info\s/)
})
