// Regions and their views across threads, read by Bun workers: the case table both runtimes run
// (cases/regions.ts; ava runs it in region-views.spec.ts, with Node.js's own untransferable marks).
import { regionCases } from '../cases/regions'
import { bunCases } from './cases'

bunCases(regionCases)
