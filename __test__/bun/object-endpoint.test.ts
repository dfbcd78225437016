// A malformed object-store endpoint is refused with an error that names it, never an abort: the
// case table both runtimes run (cases/object-endpoint.ts; ava runs it in object-endpoint.spec.ts).
import { endpointCases } from '../cases/object-endpoint'
import { bunCases } from './cases'

bunCases(endpointCases)
