// The contenders of run.mjs's scenarios: what each runs (a baseline program's arguments, or the
// spec bench/child.mjs takes) and the rows it reports (each with how to read its metrics from the
// raw result).

import { latencySummary } from '../common.mjs'

const MiB = 1024 * 1024

/**
 * The contender builders for a run: `config` is the runner's sizes, `baselines` the baseline
 * programs that built (by kind: 'c', 'rust'), `scanFile` the path of the scan file.
 */
export function contendersFor({ config, baselines, scanFile }) {
  function latencyRows(id, label) {
    return [
      {
        id,
        label,
        extract: (r) => ({ ...latencySummary(r.latNs), timerNs: r.residentNs ?? r.residentReadNs, sameCpuShare: r.sameCpuShare }),
      },
    ]
  }

  /**
   * The contenders of a baseline program (`kind`: 'c' or 'rust', see `baselines`): both take
   * bench/baseline.c's arguments and print its JSON.
   */
  function nativeBaseline(kind) {
    return {
      /** A latency contender; `cross` pins its faulting thread to CPU 0 and its handler to CPU 1 (in the unpinned table only). */
      latency: (id, label, op, spin = 0, cross = false) => baselineLatency(kind, id, label, op, spin, cross),
      throughput: (id, label, threads) => baselineThroughput(kind, threads, config.throughputPages, throughputRows(id, label, threads)),
      /** The scaling scenario's baseline: one handler thread whatever the faulting threads. */
      scaling: (id, label, threads) => baselineThroughput(kind, threads, config.scalingPages, scalingRows(id, label, threads, 1)),
      scan: (id, label, mode) => baselineScan(kind, id, label, mode),
    }
  }
  function baselineLatency(kind, id, label, op, spin, cross) {
    return {
      id,
      kind,
      onlyPin: cross ? 'none' : undefined,
      args: (pin) => [
        '--mode',
        'latency',
        '--op',
        op,
        '--pages',
        config.latencyPages,
        '--warmup',
        config.latencyWarmup,
        '--pin',
        cross ? 'cross' : pin,
        '--spin',
        spin,
        '--warm-mib',
        config.warmMiB,
      ],
      rows: latencyRows(id, label),
    }
  }

  function jsLatency(id, label, contender, op, spinMicros = 0) {
    return {
      id,
      kind: 'js',
      spec: () => ({
        kind: 'latency',
        contender,
        op,
        pages: config.latencyPages,
        warmup: config.latencyWarmup,
        spinMicros,
        warmMiB: config.warmMiB,
      }),
      rows: latencyRows(id, label),
    }
  }

  /** Faults per second of a throughput measurement (child.mjs or a baseline program). */
  function throughputMetrics(r) {
    return {
      faultsPerSec: r.faults / (r.elapsedNs / 1e9),
      elapsedNs: r.elapsedNs,
      faults: r.faults,
      // How many faults one wake-up of the handler took: messages per read(2) for the baselines, per JS callback for the package.
      perWake: r.handler ? r.handler.faults / r.handler.reads : r.stats?.batches ? r.stats.messages / r.stats.batches : undefined,
    }
  }

  function throughputRows(id, label, threads) {
    return [{ id, label, threads, ref: `c@${threads}`, extract: throughputMetrics }]
  }

  /**
   * A row of the scaling scenario: its ratios are to the C baseline with the same faulting threads
   * (`ref`) and to the same contender with one reader (`one`; none for the baselines).
   */
  function scalingRows(id, label, threads, readers) {
    const [kind] = id.split('@')
    return [
      {
        id,
        label,
        threads,
        readers,
        ref: `c@${threads}`,
        one: kind in baselines ? undefined : `${kind}@${threads}x1`,
        extract: (r) => ({
          ...throughputMetrics(r),
          // What the build says it read with (native), and how the handler workers shared the faults (worker).
          readersReported: typeof r.readersReported === 'number' ? r.readersReported : undefined,
          ...workerShares(r.workerFaults),
        }),
      },
    ]
  }

  /** How many handler workers copied at least 1% of the faults, and the largest share one copied. */
  function workerShares(counts) {
    if (!Array.isArray(counts) || counts.length === 0) return {}
    const total = counts.reduce((a, b) => a + b, 0)
    if (total === 0) return {}
    return { workersServing: counts.filter((n) => n >= total / 100).length, topWorkerShare: Math.max(...counts) / total }
  }

  function baselineThroughput(kind, threads, pages, rows) {
    return {
      id: rows[0].id,
      kind,
      args: (pin) => [
        '--mode',
        'throughput',
        '--op',
        'copy',
        '--pages',
        pages,
        '--threads',
        threads,
        '--pin',
        pin,
        '--warm-mib',
        config.warmMiB,
      ],
      rows,
    }
  }

  function scanRows(id, label) {
    return [
      {
        id,
        label,
        extract: (r) => ({
          mibPerSec: r.bytes / MiB / (r.elapsedNs / 1e9),
          ttfbNs: r.ttfbNs,
          elapsedNs: r.elapsedNs,
          setupNs: r.setupNs,
          firstReadNs: Number.isFinite(r.setupNs) ? r.ttfbNs - r.setupNs : undefined,
        }),
      },
    ]
  }

  function baselineScan(kind, id, label, mode) {
    return {
      id,
      kind,
      args: () => [
        '--mode',
        mode,
        '--file',
        scanFile(),
        '--chunk',
        config.scanChunk,
        '--ra',
        config.scanReadahead,
        '--warm-mib',
        config.scanMiB,
      ],
      rows: scanRows(id, label),
    }
  }

  function jsScan(id, label, contender) {
    return {
      id,
      kind: 'js',
      spec: () => ({
        kind: 'scan',
        contender,
        file: scanFile(),
        size: config.scanMiB * MiB,
        chunk: config.scanChunk,
        warmMiB: config.scanMiB,
      }),
      rows: scanRows(id, label),
    }
  }

  function jsResident(id, label, contender) {
    return {
      id,
      kind: 'js',
      spec: () => ({ kind: 'resident', contender, file: scanFile(), size: config.scanMiB * MiB, fraction: 0.01 }),
      rows: [
        {
          id,
          label,
          // VmRSS may fall while a measurement runs (the collector frees what the process held before);
          // a fall is no negative memory use: growth counts from 0, and the fall is kept apart.
          extract: (r) => ({
            residentMiB: Math.max(0, r.residentBytes) / MiB,
            residentShare: Math.max(0, r.residentBytes) / r.size,
            fellMiB: Math.max(0, -r.residentBytes) / MiB,
            touchedMiB: r.touchedBytes / MiB,
            elapsedNs: r.elapsedNs,
          }),
        },
      ],
    }
  }

  function jsThroughput(id, label, contender, threads) {
    return {
      id,
      kind: 'js',
      spec: () => ({
        kind: 'throughput',
        contender,
        threads,
        pages: config.throughputPages,
        warmup: config.throughputWarmup,
        warmMiB: config.warmMiB,
      }),
      rows: throughputRows(id, label, threads),
    }
  }

  /**
   * The package in the scaling scenario: `new Userfaultfd({ readers })` with a native source
   * ('native'), or `handleInWorker(module, { workers: readers })` ('worker'). `support` names what
   * a build may lack: once a child says it is not supported, the runner records the other rows that
   * need it as not supported too, without starting a child for them.
   */
  function jsScaling(contender, threads, readers) {
    const id = `${contender}@${threads}x${readers}`
    const label = contender === 'native' ? `native Source.bytes, readers: ${readers}` : `handleInWorker, workers: ${readers}`
    const option = contender === 'native' ? { readers } : { workers: readers }
    return {
      id,
      kind: 'js',
      support: readers > 1 ? `${contender === 'native' ? 'readers' : 'workers'}: ${readers}` : undefined,
      spec: () => ({
        kind: 'throughput',
        contender,
        threads,
        ...option,
        pages: config.scalingPages,
        warmup: config.throughputWarmup,
        warmMiB: config.warmMiB,
      }),
      rows: scalingRows(id, label, threads, readers),
    }
  }

  const C = nativeBaseline('c')
  const RUST = nativeBaseline('rust')
  return { C, RUST, latencyRows, jsLatency, jsThroughput, jsScaling, jsScan, jsResident }
}
