// The latency scenarios of run.mjs: one thread takes missing faults (latency-copy, latency-zero) or
// minor faults (latency-continue), each timed; the package's contenders next to the C and Rust
// baselines, pinned to one CPU and unpinned.
import { failedCell, markdownTable, note, PIN_NAMES, ratio, us } from '../format.mjs'
import { find, refOf } from '../summary.mjs'

/** The scenarios' definitions: `ctx` holds the contender builders, `hasRust`, `cpus` and `pins`. */
export function define({ C, RUST, jsLatency, hasRust, cpus, pins }) {
  return {
    'latency-copy': {
      title: 'latency-copy: one thread takes missing faults on fresh pages, each resolved by COPY of one page',
      unit: 'latency',
      pins,
      base: 'c',
      contenders: [
        C.latency('c', 'C baseline (epoll, sleeps)', 'copy'),
        C.latency('c-spin', 'C baseline, polls 50 us before sleeping', 'copy', 50),
        ...(cpus >= 2
          ? [
              C.latency('c-cross', 'C baseline, handler pinned to the other CPU', 'copy', 0, true),
              C.latency('c-cross-spin', 'C baseline, other CPU, polls 50 us', 'copy', 50, true),
            ]
          : []),
        ...(hasRust ? [RUST.latency('rust', 'Rust baseline (userfaultfd crate, epoll, sleeps)', 'copy')] : []),
        jsLatency('native', 'native Source.bytes, main thread reads', 'native', 'copy'),
        jsLatency('native-spin', 'native Source.bytes, spinMicros 50', 'native', 'copy', 50),
        jsLatency('js', 'JS handler on main, a worker reads', 'js', 'copy'),
        jsLatency('js-spin', 'JS handler on main, spinMicros 50', 'js', 'copy', 50),
        jsLatency('worker', 'handleInWorker (reads the fd itself), main thread reads', 'worker', 'copy'),
        jsLatency('worker-spin', 'handleInWorker (reads the fd itself), spinMicros 50', 'worker', 'copy', 50),
        jsLatency('worker-fed', 'handleInWorker fed by the loop thread (direct: false)', 'worker-fed', 'copy'),
      ],
    },
    'latency-zero': {
      title: 'latency-zero: the same with ZEROPAGE',
      unit: 'latency',
      pins,
      base: 'c',
      contenders: [
        C.latency('c', 'C baseline (UFFDIO_ZEROPAGE)', 'zero'),
        ...(cpus >= 2 ? [C.latency('c-cross', 'C baseline, handler pinned to the other CPU', 'zero', 0, true)] : []),
        ...(hasRust ? [RUST.latency('rust', 'Rust baseline (userfaultfd crate, zeropage)', 'zero')] : []),
        jsLatency('native', 'native Source.zero(), main thread reads', 'native', 'zero'),
        jsLatency('js', 'JS handler fault.zero() on main, a worker reads', 'js', 'zero'),
        jsLatency('worker', 'handleInWorker fault.zero(), main reads', 'worker', 'zero'),
      ],
    },
    'latency-continue': {
      title: 'latency-continue: minor faults of a memfd whose page cache is full, each resolved by CONTINUE',
      unit: 'latency',
      pins,
      base: 'c',
      contenders: [
        C.latency('c', 'C baseline (MINOR + UFFDIO_CONTINUE)', 'continue'),
        ...(cpus >= 2 ? [C.latency('c-cross', 'C baseline, handler pinned to the other CPU', 'continue', 0, true)] : []),
        ...(hasRust ? [RUST.latency('rust', 'Rust baseline (userfaultfd crate, continue)', 'continue')] : []),
        jsLatency('native', 'native Source.pageCache(), main thread reads', 'native', 'continue'),
        jsLatency('js', 'JS handler fault.continue() on main, a worker reads', 'js', 'continue'),
        jsLatency('worker', 'handleInWorker fault.continue(), main reads', 'worker', 'continue'),
      ],
    },
  }
}

/** The lines of a latency scenario's section of the report, after its title: a table per pinning. */
export function section(summaries, name, ctx) {
  const { definitions, config } = ctx
  const lines = []
  for (const pin of definitions[name].pins) {
    lines.push('')
    lines.push(`${PIN_NAMES[pin]}, ${config.latencyPages} timed faults per repetition after ${config.latencyWarmup} untimed:`)
    lines.push('')
    lines.push(latencyTable(summaries, name, pin, ctx))
  }
  return lines
}

export function latencyTable(summaries, scenario, pin, { definitions }) {
  const rows = []
  const cSpin = find(summaries, scenario, pin, 'c-spin')
  for (const s of summaries.filter((x) => x.scenario === scenario && x.pin === pin)) {
    if (!s.ok) {
      rows.push([s.label, failedCell(s), '', '', '', '', ''])
      continue
    }
    const ref = refOf(definitions, summaries, s)
    const x = s.metrics
    const isSpin = s.contender.endsWith('-spin') && !s.contender.startsWith('c')
    const vsSpin = isSpin && cSpin?.ok ? ` (${ratio(x.p50Ns / cSpin.metrics.p50Ns)} of C spin)` : ''
    rows.push([
      s.label,
      us(x.p50Ns),
      us(x.p99Ns),
      `${us(s.spread.p50Ns[0])} - ${us(s.spread.p50Ns[1])}`,
      ref?.ok ? `${ratio(x.p50Ns / ref.metrics.p50Ns)}${vsSpin}` : '-',
      ref?.ok ? ratio(x.p99Ns / ref.metrics.p99Ns) : '-',
      [
        x.timerNs === undefined ? '' : `timer ${Math.round(x.timerNs)} ns`,
        x.sameCpuShare === undefined || pin === 'same' ? '' : `same CPU ${(x.sameCpuShare * 100).toFixed(0)}%`,
        note(s),
      ]
        .filter(Boolean)
        .join('; '),
    ])
  }
  return markdownTable(['contender', 'p50', 'p99', 'p50 min - max', 'p50 / C', 'p99 / C', 'notes'], rows)
}
