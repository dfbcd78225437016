// What errors and warnings say: the case table both runtimes run (cases/errors.ts; ava runs it in
// errors.spec.ts).
import { errorCases } from '../cases/errors'
import { bunCases } from './cases'

bunCases(errorCases)
