// Every cell of the kernel's memory types x {missing + copy, missing + zero, minor + continue}: the
// case table both runtimes run (cases/faults.ts; Bun runs it in bun/faults.test.ts).
import { avaCases } from './cases/ava'
import { faultCases } from './cases/faults'

avaCases(faultCases)
