// Every cell of the kernel's memory types x {missing + copy, missing + zero, minor + continue}: the
// case table both runtimes run (cases/faults.ts; ava runs it in faults.spec.ts).
import { faultCases } from '../cases/faults'
import { bunCases } from './cases'

bunCases(faultCases)
