// A process ends when its script does: the case table both runtimes run (cases/exit.ts; Bun runs
// it in bun/exit.test.ts).
import { avaCases } from './cases/ava'
import { exitCases } from './cases/exit'

avaCases(exitCases)
