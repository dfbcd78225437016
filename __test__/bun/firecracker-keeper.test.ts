// The restore server survives its own restart (a keeper), its servers and keepers run on Bun: the
// case table both runtimes run (cases/firecracker-keeper.ts; ava runs it in firecracker-keeper.spec.ts).
import { keeperCases } from '../cases/firecracker-keeper'
import { bunCases } from './cases'

bunCases(keeperCases)
