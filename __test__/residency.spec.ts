// A residency limit (maxResident) against the real kernel: the case table both runtimes run
// (cases/residency.ts; Bun runs it in bun/residency.test.ts).
import { avaCases } from './cases/ava'
import { residencyCases } from './cases/residency'

avaCases(residencyCases)
