// What errors and warnings say: the case table both runtimes run (cases/errors.ts; Bun runs it in
// bun/errors.test.ts).
import { avaCases } from './cases/ava'
import { errorCases } from './cases/errors'

avaCases(errorCases)
