#!/usr/bin/env node
// The benchmark runner of the userfaultfd package: `npx userfaultfd-bench` (installed), or
// `npm run bench` in a checkout (= node bench/run.mjs).
//
//   userfaultfd-bench [--quick] [--out DIR] [--json FILE] [--scenario NAME]... [--reps N] [--threads LIST] [--readers LIST]
//
// Every scenario runs each contender in the same run, contenders alternating (their order rotates
// from one repetition to the next), several repetitions, and reports medians over repetitions with
// ratios to the C baseline (bench/baseline.c, built with the system compiler into a temporary
// folder that is removed at the end) of the same scenario and pinning. Next to it runs the Rust
// baseline (bench/rust-baseline/, the same handler on the userfaultfd crate, built by cargo when its
// sources and cargo are there: the published package ships without them). What cannot run here (no
// C compiler, no Rust baseline, no SeaweedFS for the object store, no Firecracker driver) is said
// in one line on stderr, `skipped: WHAT: WHY`, and the run goes on without it. Measurements run
// in child processes (bench/child.mjs for the package, each baseline for itself), one after the
// other, never two at once. Results: tables on stdout, progress on stderr, JSON in
// DIR/userfaultfd-bench.json (DIR: --out, else the current folder; and in FILE with --json).
// Nothing is written into the package's own folder: the scan file and the baseline's binary live
// in the temporary folder.
//
// The scaling scenario runs only when named (--scenario scaling): faulting threads (--threads) x
// readers (--readers), where readers are a native source's reader threads (`new Userfaultfd({
// readers })`) or handler workers (`handleInWorker(module, { workers })`). A build of the package
// without them gets "not supported by this build" in those rows, and the run goes on.
//
// This file is the runner: arguments, the plan, the report and the JSON. Each scenario is a module
// of bench/scenarios/ (its definition: contenders and rows, and its section of the report; the
// contender builders in scenarios/contenders.mjs); the runner's parts are modules beside it:
// baselines.mjs (building them), load.mjs (is the machine idle), children.mjs (child processes,
// progress), measure.mjs (running a task, recording its rows), summary.mjs (medians), goals.mjs,
// format.mjs (figures and tables).
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, release, tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { buildC, buildRust } from './baselines.mjs'
import { makeProgress, stopChildren } from './children.mjs'
import { firstLine } from './format.mjs'
import { goals, goalsTable, verdict } from './goals.mjs'
import { loadWarning, measureLoad } from './load.mjs'
import { measurer } from './measure.mjs'
import { contendersFor } from './scenarios/contenders.mjs'
import * as kernelFloor from './scenarios/kernel-floor.mjs'
import * as latency from './scenarios/latency.mjs'
import * as resident from './scenarios/resident.mjs'
import * as scaling from './scenarios/scaling.mjs'
import * as scan from './scenarios/scan.mjs'
import * as throughput from './scenarios/throughput.mjs'
import { summarize } from './summary.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = resolve(HERE, '..')
// A git checkout of the project (`npm run bench`), or the package as installed (`npx userfaultfd-bench`).
const CHECKOUT = existsSync(join(ROOT, '.git'))
const CHILD = join(HERE, 'child.mjs')
const MiB = 1024 * 1024
/** The scenarios, in the order they run, with what each measures (for --help). */
const SCENARIO_TEXT = {
  'latency-copy': 'one thread takes missing faults, each resolved by COPY of one page: latency',
  'latency-zero': 'the same with ZEROPAGE',
  'latency-continue': 'minor faults of a memfd resolved by CONTINUE',
  throughput: '1, 2 and 8 threads fault at once: faults per second',
  scan: 'one byte per page of a file in the page cache (64 MiB with --quick, 1 GiB without)',
  resident: 'resident memory after reading 1% of that file at random',
  'kernel-floor': "the kernel's own fault on plain memory, no userfaultfd",
  'object-store': 'Source.objectStore against SeaweedFS started on loopback (needs its `weed` binary)',
  scaling: 'faulting threads x reader threads or handler workers (only when named)',
  firecracker: 'snapshot restores of a real Firecracker (only when named; needs Firecracker and its driver)',
}
const SCENARIOS = Object.keys(SCENARIO_TEXT)
// Run only when asked: the scaling table is meant for a many-core machine, and its full form (16
// threads x readers pairs, each contender in its own process) would nearly double the default run;
// the Firecracker restores need a Firecracker and a guest snapshot built beside the project.
const ON_REQUEST = ['scaling', 'firecracker']
// Scenarios that are scripts of their own, run after the others, each writing its own JSON.
const SCRIPTS = { 'object-store': 'object-store.mjs', firecracker: 'firecracker.mjs' }

// ---- arguments -------------------------------------------------------------------------------------

const NAME = CHECKOUT ? 'node bench/run.mjs' : 'npx userfaultfd-bench'
const USAGE = `usage: ${NAME} [--quick] [--out DIR] [--json FILE] [--scenario NAME]... [--reps N] [--threads LIST] [--readers LIST]

Benchmarks of the userfaultfd package next to a C handler (and, in a checkout, a Rust one), on
this machine's kernel. Tables on stdout, progress on stderr; a missing prerequisite (no C
compiler, no SeaweedFS, ...) skips what needs it, with one line \`skipped: WHAT: WHY\`.

scenarios (all but ${ON_REQUEST.join(' and ')} by default):
${SCENARIOS.map((name) => `  ${name.padEnd(17)}${SCENARIO_TEXT[name]}`).join('\n')}

options:
  --quick          small sizes and 3 repetitions: the default scenarios in about a minute
  --out DIR        the folder for the results (default: the current folder): userfaultfd-bench.json,
                   and userfaultfd-bench-object-store.json, userfaultfd-bench-firecracker.json
  --json FILE      also write the main results to FILE
  --scenario NAME  run only this scenario (repeatable)
  --reps N         repetitions per contender (default 5, or 3 with --quick)
  --threads LIST   scaling: faulting thread counts, e.g. 1,2,8,16 (the default; 2 with --quick)
  --readers LIST   scaling: reader threads and handler workers, e.g. 1,2,4,8 (the default; 1,2 with --quick)
  --help           this text

environment: CC (the C compiler, default cc), WEED (SeaweedFS's weed, default: on PATH),
FCWORK, FIRECRACKER, FIRECRACKER_EXAMPLES and DRIVE (the Firecracker scenario), TMPDIR.
Nothing is written into the package's folder: the C baseline and the scan file go to a
temporary folder, removed at the end.`

let args
try {
  args = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      json: { type: 'string' },
      scenario: { type: 'string', multiple: true },
      reps: { type: 'string' },
      threads: { type: 'string' },
      readers: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  }).values
} catch (error) {
  process.stderr.write(`${error.message}\n${USAGE}\n`)
  process.exit(2)
}
if (args.help) {
  process.stdout.write(`${USAGE}\n`)
  process.exit(0)
}
const OUT = resolve(process.cwd(), args.out ?? '.')
const requested = args.scenario ?? SCENARIOS.filter((name) => !ON_REQUEST.includes(name))
const scripts = requested.filter((name) => name in SCRIPTS)
const scenarios = requested.filter((name) => !(name in SCRIPTS))
for (const name of requested) {
  if (!SCENARIOS.includes(name)) {
    process.stderr.write(`unknown scenario ${name}: choose among ${SCENARIOS.join(', ')}\n`)
    process.exit(2)
  }
}
const quick = args.quick
const reps = args.reps === undefined ? (quick ? 3 : 5) : Number(args.reps)
if (!Number.isInteger(reps) || reps < 1) {
  process.stderr.write(`--reps takes a positive integer, not ${args.reps}\n`)
  process.exit(2)
}

/** A comma-separated list of positive integers (`--threads`, `--readers`), sorted, each once. */
function countsOf(option, text, fallback) {
  if (text === undefined) return fallback
  const counts = text.split(',').map((x) => Number(x.trim()))
  if (counts.length === 0 || !counts.every((n) => Number.isInteger(n) && n >= 1 && n <= 1024)) {
    process.stderr.write(`--${option} takes positive integers separated by commas (e.g. 1,2,8), not ${text}\n`)
    process.exit(2)
  }
  return [...new Set(counts)].sort((a, b) => a - b)
}
if ((args.threads !== undefined || args.readers !== undefined) && !requested.includes('scaling')) {
  process.stderr.write('--threads and --readers set the scaling scenario, which runs only when named: add --scenario scaling\n')
  process.exit(2)
}
const scalingThreads = countsOf('threads', args.threads, quick ? [2] : [1, 2, 8, 16])
const scalingReaders = countsOf('readers', args.readers, quick ? [1, 2] : [1, 2, 4, 8])

const config = {
  quick,
  reps,
  // One child process per measurement for the full run; with --quick, the package's contenders of
  // one repetition and pinning share a child (Node.js starts in ~0.25 s here: that budget matters).
  isolate: !quick,
  warmMiB: quick ? 32 : 64,
  latencyPages: quick ? 1000 : 2000,
  latencyWarmup: quick ? 100 : 200,
  spinMicros: 50,
  throughputPages: quick ? 4096 : 32768,
  throughputWarmup: quick ? 16 : 64,
  throughputThreads: [1, 2, 8],
  // The scaling scenario: every count of faulting threads x every count of readers. More faults
  // than the throughput scenario's: a quick run compares two rows that differ by tens of percent.
  scalingThreads,
  scalingReaders,
  scalingPages: quick ? 16384 : 65536,
  scanMiB: quick ? 64 : 1024, // the goals speak of 1 GiB; --quick keeps it small
  scanChunk: 2 * MiB,
  scanReadahead: 16,
  floorPages: quick ? 1000 : 2000,
}

// ---- the environment -----------------------------------------------------------------------------

const startedAt = new Date()
const warnings = []
const skipped = []
/** Says in one line on stderr what this run leaves out and why (also in the report and the JSON). */
function skip(what, why) {
  skipped.push({ what, why })
  process.stderr.write(`skipped: ${what}: ${why}\n`)
}
const cpus = availableParallelism()
const command = [NAME, ...process.argv.slice(2)].join(' ')
const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version

function git(...gitArgs) {
  const r = spawnSync('git', gitArgs, { cwd: ROOT, encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : undefined
}
// Only a checkout has a commit: an installed package may sit in some other project's repository.
const commit = CHECKOUT ? git('rev-parse', '--short', 'HEAD') : undefined
const dirty = CHECKOUT ? git('status', '--porcelain', '--untracked-files=no') : undefined

if (!existsSync(join(ROOT, 'dist', 'index.mjs'))) {
  process.stderr.write(
    CHECKOUT
      ? `dist/index.mjs is missing: run \`npm run build:ts\` in ${ROOT} first\n`
      : `${ROOT} has no dist/index.mjs: the package is incomplete, install it again\n`,
  )
  process.exit(1)
}

// Only scenarios that are scripts of their own: no baselines to build, no load to measure.
if (scenarios.length === 0) {
  process.exitCode = runScripts()
  process.exit()
}

// The temporary folder: the C baseline's binary and the scan file. Removed when the run ends,
// however it ends (the signal handlers below exit through process.exit).
let WORK
try {
  WORK = mkdtempSync(join(tmpdir(), 'userfaultfd-bench-'))
} catch (error) {
  process.stderr.write(`could not make a temporary folder in ${tmpdir()} (${error.message}): set TMPDIR to a writable folder\n`)
  process.exit(1)
}
process.on('exit', () => rmSync(WORK, { recursive: true, force: true }))

// ---- is the machine idle? Other processes' CPU time skews every figure (wake-ups above all) ----------

const loadBefore = await measureLoad(cpus)
loadWarning(warnings, cpus, 'before the run', loadBefore)

const tasksetOk = spawnSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' }).status === 0
if (!tasksetOk) warnings.push('taskset is missing or refused: the pinned (same-CPU) figures are skipped')
if (cpus < 2) warnings.push(`only ${cpus} CPU available: "unpinned" is the same as pinned here`)
const pins = tasksetOk ? ['same', 'none'] : ['none']

// The programs that take bench/baseline.c's arguments and print its JSON, by contender kind: the
// ones that built. A contender of a kind missing here is left out of every scenario.
const BASELINES = {}
const cBaseline = buildC({ work: WORK, skip, warnings })
if (cBaseline) BASELINES.c = cBaseline
const rustBaseline = buildRust({ root: ROOT, skip, warnings })
if (rustBaseline) BASELINES.rust = rustBaseline
const hasRust = 'rust' in BASELINES

// ---- the scenarios: their definitions (contenders and rows), and the section of the report each writes ----

const scanFile = () => join(WORK, `scan-${config.scanMiB}MiB.bin`)
const builders = contendersFor({ config, baselines: BASELINES, scanFile })
const DEFINITIONS = {}
/** Each scenario's section of the report after its title: (summaries, name, ctx) => lines. */
const SECTIONS = {}
for (const scenarioModule of [latency, throughput, scaling, scan, resident, kernelFloor]) {
  for (const [name, def] of Object.entries(scenarioModule.define({ ...builders, hasRust, cpus, pins, config }))) {
    DEFINITIONS[name] = def
    SECTIONS[name] = scenarioModule.section
  }
}
// A baseline that did not build (see `skipped`) has no contenders.
for (const def of Object.values(DEFINITIONS)) def.contenders = def.contenders.filter((c) => c.kind === 'js' || c.kind in BASELINES)

// ---- the plan: tasks (child processes) in the order they run -------------------------------------------

function rotate(list, by) {
  const k = by % list.length
  return [...list.slice(k), ...list.slice(0, k)]
}

const tasks = []
for (const name of scenarios) {
  const def = DEFINITIONS[name]
  for (let rep = 0; rep < reps; rep++) {
    for (const pin of rotate(def.pins, rep)) {
      const order = rotate(def.contenders, rep)
      let batch
      for (const contender of order) {
        if (contender.onlyPin && contender.onlyPin !== pin) continue
        if (contender.kind in BASELINES) {
          tasks.push({ kind: contender.kind, scenario: name, rep, pin, contenders: [contender] })
        } else if (config.isolate || def.isolate) {
          tasks.push({ kind: 'js', scenario: name, rep, pin, contenders: [contender] })
        } else if (batch) {
          batch.contenders.push(contender)
        } else {
          batch = { kind: 'js', scenario: name, rep, pin, contenders: [contender] }
          tasks.push(batch)
        }
      }
    }
  }
}
const totalRows = tasks.reduce((n, task) => n + task.contenders.reduce((m, c) => m + c.rows.length, 0), 0)

let progress
for (const [signal, status] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
]) {
  process.on(signal, () => {
    stopChildren()
    progress?.stop()
    process.stderr.write(`${signal}: the child processes were killed\n`)
    process.exit(status)
  })
}

// ---- progress on stderr, and the measurements ------------------------------------------------------------

progress = await makeProgress(totalRows)
const { measurements, runTask } = measurer({ baselines: BASELINES, child: CHILD, cwd: WORK, warnings, progress, reps })

// ---- main ------------------------------------------------------------------------------------------------

if (scenarios.includes('scan') || scenarios.includes('resident')) {
  try {
    scan.prepareScanFile(scanFile(), config.scanMiB * MiB)
  } catch (error) {
    warnings.push(`the scan file could not be prepared: ${error.message}`)
  }
}

const t0 = Date.now()
for (const task of tasks) await runTask(task)
progress.stop()
const seconds = (Date.now() - t0) / 1000
const loadAfter = await measureLoad(cpus)
loadWarning(warnings, cpus, 'after the run', loadAfter)

const summaries = summarize(measurements, DEFINITIONS)
const goalList = goals(summaries, { scenarios, pins, config, hasRust })
const out = []
out.push(`# userfaultfd benchmark, ${startedAt.toISOString()}`)
out.push('')
out.push(
  `userfaultfd ${version}${CHECKOUT ? `, commit ${commit ?? '?'}${dirty ? ' (with uncommitted changes)' : ''}` : ''}, ` +
    `node ${process.version}, Linux ${release()}, ${cpus} CPUs; ` +
    `${reps} repetition${reps > 1 ? 's' : ''}, medians over repetitions, contenders alternating; ${config.isolate ? 'one child process per measurement' : 'package contenders of a repetition share a child process'}; ` +
    `${seconds.toFixed(0)} s.`,
)
for (const w of warnings.filter((text) => text.startsWith('the machine was not idle'))) {
  out.push('')
  out.push(`**Warning: ${w}.**`)
}
for (const name of scenarios) {
  const def = DEFINITIONS[name]
  out.push('')
  out.push(`## ${def.title}`)
  out.push(...SECTIONS[name](summaries, name, { definitions: DEFINITIONS, baselines: BASELINES, config, cpus }))
}
out.push('')
out.push(quick ? '## Goals (indicative: quick run)' : '## Goals')
out.push('')
if (quick) {
  out.push(
    `Quick run: ${reps} repetition${reps > 1 ? 's' : ''} of small sizes are too few to judge the goals, so no verdict is given; ` +
      'the ratios are indicative. Run without --quick to judge them.',
  )
  out.push('')
}
out.push(goalsTable(goalList, quick))
const failures = measurements.filter((m) => !m.ok && !m.unsupported)
if (failures.length) {
  out.push('')
  out.push(`## Failures (${failures.length})`)
  out.push('')
  for (const f of failures) out.push(`- ${f.scenario} ${f.pin} rep ${f.rep + 1} ${f.label}: ${firstLine(f.error)}`)
}
if (skipped.length) {
  out.push('')
  out.push('## Skipped')
  out.push('')
  for (const { what, why } of skipped) out.push(`- ${what}: ${why}`)
}
if (warnings.length) {
  out.push('')
  out.push('## Warnings')
  out.push('')
  for (const w of warnings) out.push(`- ${w}`)
}
out.push('')
out.push(CHECKOUT ? `Reproduce: cd ${ROOT} && npm run build:ts && ${command}` : `Reproduce: ${command}`)
process.stdout.write(`${out.join('\n')}\n`)

const json = {
  meta: {
    date: startedAt.toISOString(),
    command,
    package: { version, dir: ROOT, checkout: CHECKOUT },
    out: OUT,
    node: process.version,
    kernel: release(),
    cpus,
    commit,
    uncommittedChanges: Boolean(dirty),
    seconds,
    config,
    pins,
    // A baseline missing here was left out (see `skipped`); the C baseline's binary was in the temporary folder.
    baselines: Object.fromEntries(Object.entries(BASELINES).map(([kind, b]) => [kind, { bin: b.bin }])),
    skipped,
    load: { before: loadBefore, after: loadAfter },
  },
  summaries,
  goals: goalList.map((g) => ({ ...g, verdict: verdict(g, quick) })),
  measurements: measurements.map(({ metrics, ...m }) => ({ ...m, metrics })),
  failures: failures.map((f) => ({ scenario: f.scenario, pin: f.pin, rep: f.rep, contender: f.contender, error: f.error })),
  warnings,
}
const jsonText = `${JSON.stringify(json, null, 2)}\n`
const jsonPaths = [join(OUT, 'userfaultfd-bench.json')]
if (args.json) jsonPaths.push(resolve(process.cwd(), args.json))
for (const path of jsonPaths) {
  try {
    mkdirSync(dirname(path), { recursive: true })
    writeFileSync(path, jsonText)
    process.stderr.write(`results: ${relative(process.cwd(), path) || path}\n`)
  } catch (error) {
    process.stderr.write(`could not write ${path}: ${error.message}\n`)
    process.exitCode = 1
  }
}
if (failures.length) {
  process.stderr.write(`${failures.length} measurement${failures.length > 1 ? 's' : ''} failed: see "Failures" above\n`)
  process.exitCode = 1
}

if (scripts.length) {
  const status = runScripts()
  if (status !== 0) process.exitCode = status
}

/**
 * Runs the scenarios that are scripts of their own (bench/object-store.mjs, bench/firecracker.mjs),
 * one after the other; each says itself, in one `skipped:` line, when what it needs is missing.
 * Returns 0, or 1 when one failed.
 */
function runScripts() {
  let status = 0
  for (const name of scripts) {
    const options =
      name === 'object-store'
        ? ['--out', OUT, ...(quick ? ['--quick'] : []), ...(args.reps === undefined ? [] : ['--reps', args.reps])]
        : ['--json', join(OUT, 'userfaultfd-bench-firecracker.json'), ...(args.reps === undefined ? [] : ['--runs', args.reps])]
    const run = spawnSync(process.execPath, [join(HERE, SCRIPTS[name]), ...options], { stdio: 'inherit' })
    if (run.status !== 0) {
      process.stderr.write(
        `the ${name} scenario ${run.error ? `could not start: ${run.error.message}` : `exited with ${run.status ?? run.signal}`}\n`,
      )
      status = 1
    }
  }
  return status
}
