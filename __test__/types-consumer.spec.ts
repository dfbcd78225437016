// The shipped types as a strict consumer compiles them: dist/index.d.ts imported through a
// node_modules link, with strict, exactOptionalPropertyTypes and skipLibCheck false, so every
// declaration file of the package is checked; and nothing marked @internal in them.

import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import * as ts from 'typescript'

const root = join(__dirname, '..', '..', '..')

// Uses the public API the way the README does, plus what must not compile (each @ts-expect-error
// is itself an error if the line compiles).
const consumer = `
import { type AdoptOptions, Fault, HandshakeListener, Region, Source, UffdError, type UserfaultfdOptions, Userfaultfd } from 'userfaultfd'

const options: UserfaultfdOptions = { features: ['WP_ASYNC'], timeoutMs: 1000 }
const adopt: AdoptOptions = { features: ['THREAD_ID'], fallback: 'zero' }
const uffd = new Userfaultfd(options)
using region = Region.anonymous(1 << 20)
uffd.register(region, { missing: true, source: Source.zero(), readahead: { pages: 4, adaptive: true } })
uffd.handle((fault: Fault) => {
  fault.copy(new Uint8Array(fault.region.pageSize), { wake: true })
  // @ts-expect-error finish() is the package's own, after the handler
  fault.finish()
})
const part: Uint8Array = region.bytes(0, 4096)
const most: number = Region.maxBufferBytes
const view: Region = Region.attach(region.share())
// @ts-expect-error the binding handle is internal
region.binding
// @ts-expect-error fromId is internal
Region.fromId(1)
// @ts-expect-error a fault comes from the fault loop, never from new
new Fault()
// @ts-expect-error a listener comes from listen()
new HandshakeListener('/tmp/x.sock')
try {
  uffd.dirtyPages(region, { clear: true, method: 'pagemap' })
} catch (error) {
  if (error instanceof UffdError && error.code === 'EBADF') console.log(error.errno, error.syscall)
}
console.log(part.length, most, view.owner, adopt)
`

test('the shipped types compile in a strict consumer with exactOptionalPropertyTypes and skipLibCheck false', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-types-'))
  try {
    mkdirSync(join(dir, 'node_modules'))
    symlinkSync(root, join(dir, 'node_modules', 'userfaultfd'), 'dir')
    const file = join(dir, 'consumer.ts')
    writeFileSync(file, consumer)
    const program = ts.createProgram([file], {
      strict: true,
      exactOptionalPropertyTypes: true,
      skipLibCheck: false,
      noEmit: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.Node16,
      moduleResolution: ts.ModuleResolutionKind.Node16,
      lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
      types: ['node'],
      typeRoots: [join(root, 'node_modules', '@types')],
    })
    const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined
      const name = d.file ? d.file.fileName.replace(root, '<package>').replace(dir, '<consumer>') : ''
      return `${name}${where ? `(${where.line + 1},${where.character + 1})` : ''}: TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`
    })
    t.deepEqual(diagnostics, [])
    const checked = program.getSourceFiles().map((f) => f.fileName)
    t.true(
      checked.some((f) => f.endsWith('dist/index.d.ts')),
      'the consumer compiled against the built dist/index.d.ts',
    )
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('the shipped .d.ts files carry no @internal member', (t) => {
  const fault = readFileSync(join(root, 'dist', 'lib', 'fault.d.ts'), 'utf8')
  t.notRegex(fault, /\bfinish\(/, 'fault.finish() is not in the types')
  for (const name of ['index', 'lib/fault', 'lib/region', 'lib/remote', 'lib/source', 'lib/userfaultfd', 'lib/errors']) {
    t.notRegex(readFileSync(join(root, 'dist', `${name}.d.ts`), 'utf8'), /@internal/, `${name}.d.ts`)
  }
})

test('the API reference builds without a warning (treatWarningsAsErrors), and no @internal member is in it or in the published types', (t) => {
  const root = join(__dirname, '..', '..', '..')
  const out = mkdtempSync(join(tmpdir(), 'uffd-docs-'))
  try {
    const run = spawnSync(process.execPath, [join(root, 'node_modules', 'typedoc', 'bin', 'typedoc'), '--out', out], {
      cwd: root,
      encoding: 'utf8',
      timeout: 110_000,
    })
    const said = `${run.stdout}${run.stderr}`
    t.is(run.status, 0, said)
    t.notRegex(said, /warning/i)
    const pages = readdirSync(out, { recursive: true, encoding: 'utf8' }).filter((name) => name.endsWith('.html'))
    t.true(pages.some((name) => name.endsWith('Userfaultfd.html')))
    const html = pages.map((name) => readFileSync(join(out, name), 'utf8')).join('\n')
    for (const internal of ['sayAtExit', 'fromAdoption', 'handlerGeneration', 'readRaw']) {
      t.false(html.includes(internal), `${internal} is in the API reference`)
    }
    const published = readFileSync(join(root, 'dist', 'lib', 'userfaultfd.d.ts'), 'utf8')
    for (const internal of ['sayAtExit', 'fromAdoption', 'handlerGeneration']) {
      t.false(published.includes(internal), `${internal} is in the published userfaultfd.d.ts`)
    }
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
})
