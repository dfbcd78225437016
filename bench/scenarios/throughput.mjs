// The throughput scenario of run.mjs: 1, 2 and 8 threads fault at once on their own pages, each
// fault resolved by COPY of one page: faults per second, unpinned.
import { failedCell, markdownTable, note, PIN_NAMES, rate, ratio } from '../format.mjs'
import { refOf, rowDef } from '../summary.mjs'

/** The scenario's definition: `ctx` holds the contender builders, `hasRust` and the runner's `config`. */
export function define({ C, RUST, jsThroughput, hasRust, config }) {
  return {
    throughput: {
      title: 'throughput: N threads fault at once on their own pages (COPY of one page each), faults per second',
      unit: 'throughput',
      pins: ['none'],
      contenders: config.throughputThreads.flatMap((threads) => [
        C.throughput(`c@${threads}`, 'C baseline (pthreads)', threads),
        ...(hasRust ? [RUST.throughput(`rust@${threads}`, 'Rust baseline (userfaultfd crate, std threads)', threads)] : []),
        jsThroughput(`native@${threads}`, 'native Source.bytes, worker threads read', 'native', threads),
        jsThroughput(`js@${threads}`, 'JS handler on main, worker threads read', 'js', threads),
        jsThroughput(`worker@${threads}`, 'handleInWorker (reads the fd itself), worker threads read', 'worker', threads),
      ]),
    },
  }
}

/** The lines of the scenario's section of the report, after its title. */
export function section(summaries, _name, ctx) {
  return [
    '',
    `${PIN_NAMES.none}, ${ctx.config.throughputPages} faults in all per repetition (split among the threads):`,
    '',
    throughputTable(summaries, ctx),
  ]
}

function throughputTable(summaries, { definitions, baselines }) {
  const rows = []
  const kinds = ['c', 'rust', 'native', 'js', 'worker']
  const order = (s) => rowDef(definitions, 'throughput', s.contender).threads * 10 + kinds.indexOf(s.contender.split('@')[0])
  const list = summaries.filter((x) => x.scenario === 'throughput').sort((a, b) => order(a) - order(b))
  for (const s of list) {
    const threads = rowDef(definitions, 'throughput', s.contender).threads
    if (!s.ok) {
      rows.push([s.label, threads, failedCell(s), '', '', ''])
      continue
    }
    const ref = refOf(definitions, summaries, s)
    const x = s.metrics
    rows.push([
      s.label,
      threads,
      `${rate(x.faultsPerSec)}/s`,
      `${rate(s.spread.faultsPerSec[0])} - ${rate(s.spread.faultsPerSec[1])}`,
      ref?.ok ? ratio(x.faultsPerSec / ref.metrics.faultsPerSec) : '-',
      [
        `${(1e9 / x.faultsPerSec / 1000).toFixed(1)} us/fault`,
        x.perWake === undefined
          ? ''
          : `${x.perWake.toFixed(2)} faults per ${s.contender.split('@')[0] in baselines ? 'read(2)' : 'JS callback'}`,
        note(s),
      ]
        .filter(Boolean)
        .join('; '),
    ])
  }
  return markdownTable(['contender', 'threads', 'faults/s', 'min - max', 'vs C', 'notes'], rows)
}
