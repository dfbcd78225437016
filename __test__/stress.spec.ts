// A short run of `npm run stress` (scripts/stress.mjs) per memory kind: locking threads fault
// inside their locks while the regions bounce; every counter must match its verify copy.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import test from 'ava'
import { freeHugePages } from './helpers/harness'

const script = join(__dirname, '..', '..', '..', 'scripts', 'stress.mjs')

for (const [mem, mib] of [
  ['anon', 4],
  ['shmem', 4],
  ['hugetlb', 16],
] as const) {
  const skip = mem === 'hugetlb' && freeHugePages() < 8
  const define = skip ? test.skip : test
  define(
    `stress on ${mem}: faults inside locks while pages bounce, zero mismatches${skip ? ' (skipped: needs 8 free huge pages)' : ''}`,
    (t) => {
      const run = spawnSync(process.execPath, [script, '--mem', mem, '--mib', String(mib), '--seconds', '2', '--bounces', '4', '--json'], {
        encoding: 'utf8',
        timeout: 60_000,
      })
      t.is(run.status, 0, run.stderr)
      const result = JSON.parse(run.stdout.trim())
      t.log(result)
      t.is(result.mismatches, 0)
      t.deepEqual(result.errors, [])
      t.is(result.bounces, 4)
      t.true(result.faults > 0 && result.operations > 0)
      t.is(result.eexist, result.duplicateCopies, 'every duplicate COPY met EEXIST')
    },
  )
}
