// The scaling scenario of run.mjs (only when named): faulting threads x readers, where readers are
// a native source's reader threads or handler workers; faults per second, unpinned.
import { failedCell, markdownTable, note, PIN_NAMES, rate, ratio } from '../format.mjs'
import { find, refOf, rowDef } from '../summary.mjs'

/** The scenario's definition: `ctx` holds the contender builders, `hasRust` and the runner's `config`. */
export function define({ C, RUST, jsScaling, hasRust, config }) {
  return {
    scaling: {
      title:
        'scaling: N threads fault at once on their own pages (COPY of one page each), served by R readers, faults per second; ' +
        'unpinned (pinned to one CPU, more readers could not run at once)',
      unit: 'scaling',
      pins: ['none'],
      contenders: config.scalingThreads.flatMap((threads) => [
        C.scaling(`c@${threads}`, 'C baseline, one handler thread', threads),
        ...(hasRust ? [RUST.scaling(`rust@${threads}`, 'Rust baseline, one handler thread', threads)] : []),
        ...config.scalingReaders.map((readers) => jsScaling('native', threads, readers)),
        ...config.scalingReaders.map((readers) => jsScaling('worker', threads, readers)),
      ]),
    },
  }
}

/** The lines of the scenario's section of the report, after its title. */
export function section(summaries, _name, ctx) {
  const { config, cpus } = ctx
  return [
    '',
    `${PIN_NAMES.none}, ${cpus} CPUs; ${config.scalingPages} faults in all per repetition (split among the faulting threads); ` +
      'readers: reader threads of a native source, or handler workers that each read the fd; ' +
      'vs C: to the C baseline (one handler thread) with the same faulting threads; vs 1 reader: to the same contender with one:',
    '',
    scalingTable(summaries, ctx),
  ]
}

function scalingTable(summaries, { definitions, baselines }) {
  const rows = []
  const kinds = ['c', 'rust', 'native', 'worker']
  const defOf = (s) => rowDef(definitions, 'scaling', s.contender)
  const order = (s) => (defOf(s).threads * kinds.length + kinds.indexOf(s.contender.split('@')[0])) * 10_000 + defOf(s).readers
  const list = summaries.filter((x) => x.scenario === 'scaling').sort((a, b) => order(a) - order(b))
  for (const s of list) {
    const def = defOf(s)
    const kind = s.contender.split('@')[0]
    const readers = kind in baselines ? '1 thread' : def.readers
    if (!s.ok) {
      const cell = s.unsupported && !s.failed ? 'not supported by this build' : failedCell(s)
      rows.push([s.label, def.threads, readers, cell, '', '', '', s.unsupported && !s.failed ? s.unsupported : ''])
      continue
    }
    const ref = refOf(definitions, summaries, s)
    const one = def.one ? find(summaries, 'scaling', s.pin, def.one) : undefined
    const x = s.metrics
    rows.push([
      s.label,
      def.threads,
      readers,
      `${rate(x.faultsPerSec)}/s`,
      `${rate(s.spread.faultsPerSec[0])} - ${rate(s.spread.faultsPerSec[1])}`,
      ref?.ok ? ratio(x.faultsPerSec / ref.metrics.faultsPerSec) : '-',
      one?.ok ? ratio(x.faultsPerSec / one.metrics.faultsPerSec) : '-',
      [
        `${(1e9 / x.faultsPerSec / 1000).toFixed(1)} us/fault`,
        x.perWake === undefined ? '' : `${x.perWake.toFixed(2)} faults per ${kind in baselines ? 'read(2)' : 'JS callback'}`,
        x.readersReported === undefined ? '' : `stats.readers ${x.readersReported}`,
        x.workersServing === undefined
          ? ''
          : `${Math.round(x.workersServing)} of ${def.readers} workers served >= 1%, the busiest ${(x.topWorkerShare * 100).toFixed(0)}%`,
        note(s),
      ]
        .filter(Boolean)
        .join('; '),
    ])
  }
  return markdownTable(['contender', 'faulting threads', 'readers', 'faults/s', 'min - max', 'vs C', 'vs 1 reader', 'notes'], rows)
}
