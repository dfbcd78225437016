// The scan scenario of run.mjs: one byte per page of a file in the page cache, read by the main
// thread through the package's sources, a prefill by uffd.copy, fs.readFileSync, and the C and Rust
// baselines; bandwidth and time to the first byte. Also the scan file itself (the resident scenario
// reads it too).
import { closeSync, openSync, readSync, writeSync } from 'node:fs'
import { scanByte } from '../common.mjs'
import { failedCell, markdownTable, note, PIN_NAMES, ratio, time } from '../format.mjs'
import { find, refOf } from '../summary.mjs'

const MiB = 1024 * 1024

/** The scenario's definition: `ctx` holds the contender builders, `hasRust` and the runner's `config`. */
export function define({ C, RUST, jsScan, hasRust, config }) {
  return {
    scan: {
      title: `scan: one byte per page of a ${config.scanMiB} MiB file (in the page cache), read by the main thread`,
      unit: 'scan',
      pins: ['none'],
      base: 'c-prefill',
      contenders: [
        C.scan('c-prefill', 'C: pread + UFFDIO_COPY 2 MiB chunks, then read', 'scan'),
        C.scan('c-fault', 'C handler: pread + COPY of 16 pages per fault', 'scan-fault'),
        C.scan('c-mmap', "C: mmap of the file (the kernel's own faults)", 'scan-mmap'),
        ...(hasRust
          ? [
              RUST.scan('rust-prefill', 'Rust: read_at + Uffd::copy 2 MiB chunks, then read', 'scan'),
              RUST.scan('rust-fault', 'Rust handler: read_at + Uffd::copy of 16 pages per fault', 'scan-fault'),
            ]
          : []),
        jsScan('prefill', 'uffd.copy of 2 MiB chunks (readSync), then read', 'prefill'),
        jsScan('prefill-buffer', 'the same, staged in a Buffer (malloc, +16 B)', 'prefill-buffer'),
        jsScan('file-ra16', 'Source.file, readahead {pages:16}', 'file-ra16'),
        jsScan('file-adaptive', 'Source.file, readahead 16, adaptive, max 512', 'file-adaptive'),
        jsScan('file-nora', 'Source.file, no readahead', 'file-nora'),
        jsScan('file-prefetch', 'Source.file, adaptive, and uffd.prefetch() behind the reader', 'file-prefetch'),
        jsScan('readFileSync', 'fs.readFileSync, then read', 'readFileSync'),
      ],
    },
  }
}

/** The lines of the scenario's section of the report, after its title. */
export function section(summaries, _name, ctx) {
  return [
    '',
    `${PIN_NAMES.none}; MiB/s and first byte are from before any set-up (opening the userfaultfd, the region, the file) to the last / first byte read:`,
    '',
    scanTable(summaries, ctx),
  ]
}

function scanNote(x) {
  if (!Number.isFinite(x.setupNs)) return ''
  return `set-up ${time(x.setupNs)}, then first read ${time(x.firstReadNs)}`
}

function scanTable(summaries, { definitions }) {
  const rows = []
  const prefill = find(summaries, 'scan', 'none', 'prefill')
  const slurp = find(summaries, 'scan', 'none', 'readFileSync')
  for (const s of summaries.filter((x) => x.scenario === 'scan')) {
    if (!s.ok) {
      rows.push([s.label, failedCell(s), '', '', '', '', '', ''])
      continue
    }
    const ref = refOf(definitions, summaries, s)
    const x = s.metrics
    rows.push([
      s.label,
      x.mibPerSec.toFixed(0),
      `${s.spread.mibPerSec[0].toFixed(0)} - ${s.spread.mibPerSec[1].toFixed(0)}`,
      time(x.ttfbNs),
      ref?.ok ? ratio(x.mibPerSec / ref.metrics.mibPerSec) : '-',
      prefill?.ok ? ratio(x.mibPerSec / prefill.metrics.mibPerSec) : '-',
      slurp?.ok ? `${(slurp.metrics.ttfbNs / x.ttfbNs).toFixed(x.ttfbNs > slurp.metrics.ttfbNs / 10 ? 2 : 0)}x` : '-',
      [scanNote(x), note(s)].filter(Boolean).join('; '),
    ])
  }
  return markdownTable(
    ['contender', 'MiB/s', 'min - max', 'first byte', 'vs C prefill', 'vs uffd.copy', 'readFileSync first byte / this', 'notes'],
    rows,
  )
}

/** Writes the scan file (`size` bytes at `path`, the runner's temporary folder), then reads it once into the page cache. */
export function prepareScanFile(path, size) {
  const chunk = Buffer.alloc(2 * MiB)
  const pagesPerChunk = chunk.length / 4096
  const fill = (firstPage) => {
    for (let p = 0; p < pagesPerChunk; p++) chunk.fill(scanByte(firstPage + p), p * 4096, (p + 1) * 4096)
  }
  const written = openSync(path, 'w')
  try {
    for (let at = 0; at < size; at += chunk.length) {
      fill(at / 4096)
      writeSync(written, chunk, 0, chunk.length, at)
    }
  } finally {
    closeSync(written)
  }
  // Read it once so that every contender finds it in the page cache.
  const fd = openSync(path, 'r')
  try {
    for (let at = 0; at < size; at += chunk.length) readSync(fd, chunk, 0, chunk.length, at)
  } finally {
    closeSync(fd)
  }
}
