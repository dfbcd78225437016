// How a fault is resolved: the case table both runtimes run (cases/resolving.ts; Bun runs it in
// bun/resolving.test.ts).
import { avaCases } from './cases/ava'
import { resolvingCases } from './cases/resolving'

avaCases(resolvingCases)
