// Handler workers (handleInWorker): the case table both runtimes run (cases/workers.ts; ava runs it
// in workers.spec.ts).
import { workerCases } from '../cases/workers'
import { bunCases } from './cases'

bunCases(workerCases)
