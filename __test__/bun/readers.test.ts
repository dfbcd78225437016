// Handler workers beside several readers: the case table both runtimes run (cases/readers.ts; ava
// runs it in readers.spec.ts, with the native readers' own cases).
import { readerCases } from '../cases/readers'
import { bunCases } from './cases'

bunCases(readerCases)
