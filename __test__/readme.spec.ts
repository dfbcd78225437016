// The README's first example, run as written: its code block holds two files, each starting with a
// comment that names it; the test writes them out under those names and runs the first with the
// Node.js that runs the suite (every line in support, in `npm test`).
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'

const root = join(__dirname, '..', '..', '..')

/** The files of the first code block after `## Example`, by the names their first comments give. */
function exampleFiles(): Array<{ name: string; code: string }> {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('\n## Example\n'))
  const block = /```\w*\n([\s\S]*?)```/.exec(section)?.[1] ?? ''
  const files: Array<{ name: string; code: string }> = []
  for (const line of block.split('\n')) {
    const named = /^\/\/ ([\w.-]+\.\w+)[: ]/.exec(line)
    if (named?.[1]) files.push({ name: named[1], code: '' })
    const file = files.at(-1)
    if (file) file.code += `${line}\n`
  }
  return files
}

test('the README’s first example runs as written on this Node.js', (t) => {
  const files = exampleFiles()
  t.true(files.length >= 2, `the example names its files: ${files.map((f) => f.name).join(', ')}`)
  const dir = mkdtempSync(join(tmpdir(), 'uffd-readme-'))
  try {
    // The example imports the package by name, as a user's project does.
    mkdirSync(join(dir, 'node_modules'))
    symlinkSync(root, join(dir, 'node_modules', 'userfaultfd'))
    for (const { name, code } of files) writeFileSync(join(dir, name), code)
    const main = files[0]?.name ?? ''
    const run = spawnSync(process.execPath, [main], { cwd: dir, encoding: 'utf8', timeout: 60_000 })
    t.is(run.status, 0, `node ${main} (${process.version}):\n${run.stdout}\n${run.stderr}`)
    t.regex(run.stdout, /^\d+\n?$/m, 'it printed the byte it read')
    t.is(run.stderr, '', 'no warning or error')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
