// register's refusals and the resolves outside a fault: the case table both runtimes run
// (cases/api.ts; ava runs it in api.spec.ts).
import { apiCases } from '../cases/api'
import { bunCases } from './cases'

bunCases(apiCases)
