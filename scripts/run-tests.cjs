// `npm test`: builds, then runs every suite (cargo's tests of the Rust core, the ava suite on the
// `node` that runs it and again on every other Node.js line installed under .tools/ (see
// scripts/node-lines.cjs), the object-store suite, the Bun suite), streams their output, and ends
// with one line that sums them all: `N passed, N failed, N skipped`.
const { spawn, spawnSync } = require('node:child_process')
const { join } = require('node:path')
const lines = require('./node-lines.cjs')

const root = join(__dirname, '..')
const bin = (name) => join(root, 'node_modules', '.bin', name)

function sum(text, pattern) {
  let total = 0
  for (const match of text.matchAll(pattern)) total += Number(match[1])
  return total
}

const countTap = (out) => ({
  passed: sum(out, /^# pass (\d+)/gm),
  failed: sum(out, /^# fail (\d+)/gm),
  skipped: sum(out, /^# skip (\d+)/gm) + sum(out, /^# todo (\d+)/gm),
})

/** ava on one Node.js binary: its workers run on the binary that runs ava. */
const ava = (node, version, files = []) => ({
  name: `ava (Node.js ${version}${files.length ? ', object store against SeaweedFS' : ''})`,
  command: node,
  args: [join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs'), '--tap', ...files],
  count: countTap,
})

function suites() {
  const others = lines.installed().filter(({ node }) => version(node) !== process.version)
  const newest = others.at(-1) ?? { node: process.execPath }
  const missing = lines.LINES.filter((line) => !others.some((other) => other.line === line) && !process.version.startsWith(`v${line}.`))
  if (missing.length > 0) {
    console.log(`Node.js ${missing.join(', ')}: not installed, not tested here (node scripts/node-lines.cjs install)`)
  }
  return [
    {
      name: 'cargo test (uffd-core, uffd-node)',
      command: 'cargo',
      args: ['test', '--workspace', '--release', '--color', 'never'],
      count: (out) => ({
        passed: sum(out, /test result: \w+\. (\d+) passed/g),
        failed: sum(out, /test result: \w+\. \d+ passed; (\d+) failed/g),
        skipped: sum(out, /test result: \w+\. \d+ passed; \d+ failed; (\d+) ignored/g),
      }),
    },
    ava(process.execPath, process.version),
    ...others.map(({ node }) => ava(node, version(node))),
    // Alone, after the others, on the newest line: it runs SeaweedFS (and Azurite) and moves gigabytes, which
    // would slow the timing tests of the files ava runs beside it.
    ava(newest.node, version(newest.node), [
      'build/test/__test__/object-store.spec.js',
      'build/test/__test__/snapshot-push.spec.js',
      'build/test/__test__/credentials.spec.js',
      'build/test/__test__/azure.spec.js',
    ]),
    {
      name: 'bun test (Bun)',
      command: bin('bun'),
      args: ['test', '__test__/bun'],
      count: (out) => ({
        passed: sum(out, /^\s*(\d+) pass$/gm),
        failed: sum(out, /^\s*(\d+) fail$/gm),
        skipped: sum(out, /^\s*(\d+) skip$/gm) + sum(out, /^\s*(\d+) todo$/gm),
      }),
    },
  ]
}

function version(node) {
  return node === process.execPath ? process.version : spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim()
}

function run(suite) {
  return new Promise((resolve) => {
    console.log(`\n=== ${suite.name}: ${[suite.command, ...suite.args].join(' ')}`)
    const child = spawn(suite.command, suite.args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    const take = (stream, sink) =>
      stream.on('data', (chunk) => {
        out += chunk
        sink.write(chunk)
      })
    take(child.stdout, process.stdout)
    take(child.stderr, process.stderr)
    child.on('error', (error) => {
      out += String(error)
      resolve({ ...suite.count(''), failed: 1, status: 1 })
    })
    child.on('close', (status) => {
      const counts = suite.count(out)
      // A suite that failed without a failing test (a crash, a build error) still counts as a failure.
      if (status !== 0 && counts.failed === 0) counts.failed = 1
      resolve({ ...counts, status })
    })
  })
}

function build() {
  for (const script of ['build', 'build:test']) {
    const result = spawnSync('npm', ['run', '-s', script], { cwd: root, stdio: 'inherit' })
    if (result.status !== 0) return false
  }
  return true
}

async function main() {
  if (!build()) {
    console.log('\n0 passed, 1 failed, 0 skipped')
    process.exit(1)
  }
  const total = { passed: 0, failed: 0, skipped: 0 }
  const lines = []
  for (const suite of suites()) {
    const result = await run(suite)
    lines.push(`${suite.name}: ${result.passed} passed, ${result.failed} failed, ${result.skipped} skipped`)
    for (const key of Object.keys(total)) total[key] += result[key]
  }
  console.log(`\n${lines.join('\n')}`)
  console.log(`${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped`)
  process.exit(total.failed === 0 ? 0 : 1)
}

main()
