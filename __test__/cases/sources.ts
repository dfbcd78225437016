// Sources made wrong: a file that cannot serve is refused when the source is made, saying why. Run
// under Node.js (source.spec.ts) and Bun (bun/sources.test.ts).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Source } from 'userfaultfd'
import { table } from './check'
import { code } from './errors'

const { table: sourceCases, define } = table()

export { sourceCases }

define('Source.file refuses a directory and a file that cannot be read when it is made', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-source-dir-'))
  try {
    t.throws(() => Source.file(dir), { code: 'EISDIR', message: /directory/ })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  t.throws(() => Source.file('/proc/self/mem'), { code: 'EIO', message: /cannot be read/ })
})

define('a missing source file is said not to exist', (t) => {
  const error = code(t, () => Source.file('/nonexistent/userfaultfd-source'), 'ENOENT', 'open')
  t.regex(error.message, /does not exist/)
  t.notRegex(error.message, /registered|page cache/)
})
