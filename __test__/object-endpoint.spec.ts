// A malformed object-store endpoint is refused with an error that names it, never an abort: the
// case table both runtimes run (cases/object-endpoint.ts; Bun runs it in bun/object-endpoint.test.ts).
import { avaCases } from './cases/ava'
import { endpointCases } from './cases/object-endpoint'

avaCases(endpointCases)
