// JavaScript handlers on the fault path: the case table both runtimes run (cases/handlers.ts; ava
// runs it in handlers.spec.ts).
import { handlerCases } from '../cases/handlers'
import { bunCases } from './cases'

bunCases(handlerCases)
