// A residency limit (maxResident) against the real kernel: the case table both runtimes run
// (cases/residency.ts; ava runs it in residency.spec.ts).
import { residencyCases } from '../cases/residency'
import { bunCases } from './cases'

bunCases(residencyCases)
