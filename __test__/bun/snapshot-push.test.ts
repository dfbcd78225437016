// pushSnapshot against a SeaweedFS of their own, read back through faults (holes, frames, deltas, a
// local diff over an object) and its arguments checked, with Bun: the case table both runtimes run
// (cases/snapshot-push.ts; ava runs it in snapshot-push.spec.ts, the object-store phase).
import { pushTable } from '../cases/snapshot-push'
import { bunCases } from './cases'

bunCases(pushTable)
