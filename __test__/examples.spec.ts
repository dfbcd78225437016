// Every example runs on small data and checks its own bytes: exit 0 is success.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import test from 'ava'

const examples = join(__dirname, '..', '..', '..', 'examples')

for (const [name, args] of [
  ['demo', ['--mib', '32']],
  ['lazy-file', ['--small']],
  ['http-range', ['--small']],
  ['object-store', ['--small']],
  ['snapshot', ['--small']],
  ['firecracker-handler', ['--small']],
] as const) {
  test.serial(`examples/${name} runs and verifies what it read`, (t) => {
    const run = spawnSync(process.execPath, [join(examples, name, 'main.mjs'), ...args], { encoding: 'utf8', timeout: 120_000 })
    t.is(run.status, 0, `${run.stdout}\n${run.stderr}`)
    t.regex(run.stdout, /0 (mismatches|wrong bytes)/)
  })
}
