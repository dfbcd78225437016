// close() with faults pending: the case table both runtimes run (cases/lifecycle.ts; ava runs it in
// lifecycle.spec.ts).
import { lifecycleCases } from '../cases/lifecycle'
import { bunCases } from './cases'

bunCases(lifecycleCases)
