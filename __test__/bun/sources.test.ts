// Sources made wrong: the case table both runtimes run (cases/sources.ts; ava runs it in source.spec.ts).
import { sourceCases } from '../cases/sources'
import { bunCases } from './cases'

bunCases(sourceCases)
