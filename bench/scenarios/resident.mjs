// The resident scenario of run.mjs: resident memory (VmRSS growth) after reading one byte of 1% of
// the pages of the scan file at random, through the package's file source and fs.readFileSync.
import { failedCell, markdownTable, note, PIN_NAMES, ratio, time } from '../format.mjs'
import { find } from '../summary.mjs'

/** The scenario's definition: `ctx` holds the contender builders and the runner's `config`. */
export function define({ jsResident, config }) {
  return {
    resident: {
      title: `resident memory after reading one byte of 1% of the pages of the ${config.scanMiB} MiB file, at random`,
      unit: 'resident',
      pins: ['none'],
      base: 'readFileSync',
      // VmRSS growth is measured in a fresh process even with --quick: in a child shared with other
      // contenders, the garbage an earlier one left (readFileSync's buffer) is collected during a later
      // measurement, and that one's growth comes out negative.
      isolate: true,
      contenders: [
        jsResident('readFileSync', 'fs.readFileSync, then read', 'readFileSync'),
        jsResident('file-nora', 'Source.file, no readahead', 'file-nora'),
        jsResident('file-ra16', 'Source.file, readahead {pages:16}', 'file-ra16'),
        jsResident('file-adaptive', 'Source.file, readahead 16, adaptive, max 512', 'file-adaptive'),
      ],
    },
  }
}

/** The lines of the scenario's section of the report, after its title. */
export function section(summaries) {
  return ['', `${PIN_NAMES.none}; VmRSS growth of the measuring process from before reading to after:`, '', residentTable(summaries)]
}

const RESIDENT_NOISE_MiB = 0.5

function residentTable(summaries) {
  const rows = []
  const slurp = find(summaries, 'resident', 'none', 'readFileSync')
  for (const s of summaries.filter((x) => x.scenario === 'resident')) {
    if (!s.ok) {
      rows.push([s.label, failedCell(s), '', '', '', ''])
      continue
    }
    const x = s.metrics
    const noise = x.residentMiB < RESIDENT_NOISE_MiB
    rows.push([
      s.label,
      noise ? `${x.residentMiB.toFixed(1)} (within noise)` : x.residentMiB.toFixed(1),
      `${(x.residentShare * 100).toFixed(1)}%`,
      slurp?.ok ? ratio(x.residentMiB / slurp.metrics.residentMiB) : '-',
      time(x.elapsedNs),
      [
        `${x.touchedMiB.toFixed(1)} MiB of pages touched`,
        x.fellMiB > 0 ? `VmRSS fell ${x.fellMiB.toFixed(1)} MiB during the measurement (memory freed), counted as 0` : '',
        note(s),
      ]
        .filter(Boolean)
        .join('; '),
    ])
  }
  return markdownTable(['contender', 'resident MiB', 'of the file', 'vs readFileSync', 'time', 'notes'], rows)
}
