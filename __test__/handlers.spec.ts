// JavaScript handlers on the fault path: the case table both runtimes run (cases/handlers.ts; Bun
// runs it in bun/handlers.test.ts).
import { avaCases } from './cases/ava'
import { handlerCases } from './cases/handlers'

avaCases(handlerCases)
