// How a fault is resolved: the case table both runtimes run (cases/resolving.ts; ava runs it in
// resolving.spec.ts).
import { resolvingCases } from '../cases/resolving'
import { bunCases } from './cases'

bunCases(resolvingCases)
