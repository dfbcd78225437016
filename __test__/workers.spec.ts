// Handler workers (handleInWorker): the case table both runtimes run (cases/workers.ts; Bun runs it
// in bun/workers.test.ts).
import { avaCases } from './cases/ava'
import { workerCases } from './cases/workers'

avaCases(workerCases)
