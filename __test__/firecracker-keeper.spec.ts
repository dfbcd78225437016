// The restore server survives its own restart (a keeper): the case table both runtimes run
// (cases/firecracker-keeper.ts; Bun runs it in bun/firecracker-keeper.test.ts).
import { avaCases } from './cases/ava'
import { keeperCases } from './cases/firecracker-keeper'

avaCases(keeperCases)
