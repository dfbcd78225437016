// The kernel-floor scenario of run.mjs: the kernel's own missing fault on plain anonymous memory,
// no userfaultfd, read and written, from C and from JS: the floor under every other latency.
import { latencySummary } from '../common.mjs'
import { latencyTable } from './latency.mjs'

/** The scenario's definition: `ctx` holds the runner's `config`. */
export function define({ config }) {
  const definitions = {
    'kernel-floor': {
      title: "kernel-floor: the kernel's own missing fault on plain anonymous memory, no userfaultfd",
      unit: 'latency',
      pins: ['none'],
      contenders: [
        {
          id: 'c',
          kind: 'c',
          args: (pin) => ['--mode', 'floor', '--pages', config.floorPages, '--pin', pin, '--warm-mib', config.warmMiB],
          rows: [
            { id: 'c-read', label: 'C: read (maps the zero page)', extract: (r) => latencySummary(r.readNs) },
            { id: 'c-write', label: 'C: write (allocates a page)', extract: (r) => latencySummary(r.writeNs) },
          ],
        },
        {
          id: 'js',
          kind: 'js',
          spec: () => ({ kind: 'floor', pages: config.floorPages, warmMiB: config.warmMiB }),
          rows: [
            {
              id: 'js-read',
              label: 'JS: read of Region.anonymous, unregistered',
              ref: 'c-read',
              extract: (r) => ({ ...latencySummary(r.readNs), timerNs: r.residentNs }),
            },
            {
              id: 'js-write',
              label: 'JS: write of Region.anonymous, unregistered',
              ref: 'c-write',
              extract: (r) => latencySummary(r.writeNs),
            },
          ],
        },
      ],
    },
  }
  // The ratio of a row is to its `ref` row, else to the scenario's base contender.
  for (const row of definitions['kernel-floor'].contenders[0].rows) row.ref = row.id
  return definitions
}

/** The lines of the scenario's section of the report, after its title. */
export function section(summaries, name, ctx) {
  const { definitions, config } = ctx
  const lines = []
  for (const pin of definitions[name].pins) {
    lines.push('')
    lines.push(`${config.floorPages} pages per repetition, each touch timed:`)
    lines.push('')
    lines.push(latencyTable(summaries, name, pin, ctx))
  }
  return lines
}
