// A process ends when its script does: the case table both runtimes run (cases/exit.ts; ava runs
// it in exit.spec.ts).
import { exitCases } from '../cases/exit'
import { bunCases } from './cases'

bunCases(exitCases)
