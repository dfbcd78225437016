// What errors and warnings say: the code, the syscall, the numbers and their bounds, the file, and
// nothing misleading. The cases both runtimes run are in cases/errors.ts (Bun runs them in
// bun/errors.test.ts); here, what needs a process started as another user (setpriv).

import test from 'ava'
import { avaCases } from './cases/ava'
import { errorCases } from './cases/errors'
import { runChild } from './helpers/scenario'

avaCases(errorCases)

test('opened unprivileged with the defaults: user-mode-only, and one warning that says what then fails', (t) => {
  const run = runChild('open-default', undefined, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'])
  t.is(run.status, 0, run.stderr)
  t.deepEqual(run.lines, [{ userModeOnly: true }])
  t.regex(run.stderr, /UFFD_USER_MODE_ONLY/)
  t.regex(run.stderr, /write\(2\)/)
  t.is(run.stderr.match(/UFFD_USER_MODE_ONLY/g)?.length, 1)
})
