// pushSnapshot and `userfaultfd snapshot push` against a real SeaweedFS (started here on loopback
// ports, killed by pid at the end), read back through Source.objectStore by real faults: every
// byte compared with the file pushed. Every client is given its endpoint explicitly and is
// anonymous; no request leaves the loopback address.
import { spawnSync } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs'
import { type AddressInfo, connect, createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import test from 'ava'
import { Region, Source, type UffdError, Userfaultfd } from 'userfaultfd'
import { avaCases } from './cases/ava'
import {
  BUCKET,
  CHUNK,
  closers,
  dir,
  firstDifference,
  memoryFile,
  push,
  pushTable,
  serve,
  store,
  url,
  weedPath,
} from './cases/snapshot-push'
import { nextError, spawnCollecting, until } from './helpers/harness'
import { PAGE } from './helpers/object-data'
import { pageOf as pageOfSeed, vmKit } from './helpers/vm'

// Nothing here may look for credentials or ask an instance-metadata service: cases/snapshot-push.ts
// clears them when it is imported, before any test runs.
// The store, its helpers and the cases both runtimes run: cases/snapshot-push.ts (Bun runs them in
// bun/snapshot-push.test.ts). Registered first, they run first, one at a time, as the rest here does.
avaCases(pushTable)

const run = weedPath ? test.serial : test.serial.skip

run('a second push of the same file uploads nothing; one that differs in one chunk uploads one', async (t) => {
  const file = memoryFile('base.mem', 10, 2)
  const first = await push(file, 'vm/base.mem')
  t.is(first.uploaded, 8)
  const again = await push(file, 'vm/again.mem')
  t.like(again, { chunks: 11, uploaded: 0, deduped: 8, holes: 3, bytesOut: 0 })
  const sibling = memoryFile('sibling.mem', 10, 2, [7])
  const next = await push(sibling, 'vm/sibling.mem')
  t.like(next, { uploaded: 1, deduped: 7, holes: 3, fromBase: 0 })
  // With the base named, its chunks cost no request: one HEAD and one PUT for the new chunk,
  // the base's GET, the manifest's PUT.
  const fromBase = await push(sibling, 'vm/sibling2.mem', { base: url('vm/base.mem') })
  t.like(fromBase, { uploaded: 0, deduped: 8, fromBase: 7, chunkPrefix: 'vm/chunks/' })
  t.is(fromBase.requests, 4, 'the base GET, a HEAD and its frame table for the one chunk the base lacks, the manifest PUT')
  for (const [key, path] of [
    ['vm/sibling.mem', sibling],
    ['vm/sibling2.mem', sibling],
  ] as const) {
    const source = await Source.objectStore(url(key), { endpoint: store().s3, anonymous: true, env: {} })
    const { region } = serve(source, source.size)
    t.is(firstDifference(region, path), -1, key)
  }
})

run('a pushed snapshot four times its residency limit is read through it twice, byte for byte', async (t) => {
  const file = memoryFile('limited.mem', 16, 3)
  await push(file, 'limited/one.mem')
  const source = await Source.objectStore(url('limited/one.mem'), { endpoint: store().s3, anonymous: true, env: {} })
  const uffd = new Userfaultfd()
  const region = Region.anonymous(Math.ceil(source.size / PAGE) * PAGE)
  const small = Region.anonymous(16 * CHUNK)
  closers.push(() => {
    uffd.close()
    region.close()
    small.close()
  })
  const limit = 4 * CHUNK
  uffd.register(region, { source, maxResident: limit })
  const expected = readFileSync(file)
  let most = 0
  for (let pass = 0; pass < 2; pass++) {
    for (let at = 0; at < expected.length; at += CHUNK) {
      const end = Math.min(expected.length, at + CHUNK)
      t.true(Buffer.from(region.buffer, at, end - at).equals(expected.subarray(at, end)), `pass ${pass}, bytes ${at}-${end}`)
      most = Math.max(most, uffd.stats.residency.residentBytes)
    }
  }
  const stats = uffd.stats.residency
  t.true(most <= limit + CHUNK, `${most} bytes resident at most, the limit is ${limit} (and a chunk mapped at once)`)
  t.true(stats.evictions > 0 && stats.refaults > 0, JSON.stringify(stats))
  // A fault maps a whole chunk: a limit whose low water mark cannot hold one is refused, with the bound.
  const error = t.throws(() => uffd.register(small, { source, maxResident: CHUNK }))
  t.regex(error?.message ?? '', /chunk of 1048576 bytes/)
})

/**
 * A TCP proxy in this process that holds what a client sends `ms` before passing it on, in order,
 * and counts connections: requests in flight at once need connections of their own. (The push runs
 * on native threads, so this thread is free to proxy.)
 */
async function holdingProxy(target: string, ms: number) {
  const { hostname, port } = new URL(target)
  let connections = 0
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    connections++
    const upstream = connect(Number(port), hostname)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {}).on('close', () => sockets.delete(socket))
    }
    upstream.pipe(client)
    let chain = Promise.resolve()
    client.on('data', (data) => {
      const due = Date.now() + ms
      chain = chain
        .then(() => new Promise((resolve) => setTimeout(resolve, Math.max(0, due - Date.now()))))
        .then(() => void upstream.write(data))
    })
    client.on('end', () => void chain.then(() => upstream.end()))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port: own } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${own}`,
    connections: () => connections,
    close() {
      for (const socket of sockets) socket.destroy()
      server.close()
    },
  }
}

run('chunks go up several at a time: concurrency 4 opens 4 connections, concurrency 1 one', async (t) => {
  const file = memoryFile('many.mem', 8, 7)
  const connections: number[] = []
  for (const concurrency of [4, 1]) {
    const proxy = await holdingProxy(store().s3, 50)
    closers.push(() => proxy.close())
    const report = await push(file, `many/c${concurrency}.mem`, { endpoint: proxy.url, concurrency, chunkPrefix: `many/c${concurrency}/` })
    t.is(report.uploaded, 6)
    connections.push(proxy.connections())
    proxy.close()
  }
  t.log(`connections: ${connections.join(', ')}`)
  t.is(connections[0], 4, 'four requests in flight')
  t.is(connections[1], 1, 'one at a time')
})

run('snapshots that share chunks share the disk cache, keyed by content', async (t) => {
  const cacheDir = join(dir, 'cache')
  const a = memoryFile('cache-a.mem', 6, 3)
  // b: a's chunks 0 and 1 swapped, and 3 and 4: the same chunks at other places.
  const b = join(dir, 'cache-b.mem')
  const bytesOfA = readFileSync(a)
  const chunk = (i: number) => bytesOfA.subarray(i * CHUNK, (i + 1) * CHUNK)
  writeFileSync(b, Buffer.concat([chunk(1), chunk(0), chunk(2), chunk(4), chunk(3), bytesOfA.subarray(5 * CHUNK)]))
  await push(a, 'cache/a.mem')
  t.like(await push(b, 'cache/b.mem'), { uploaded: 0, deduped: 4 })
  const open = (key: string) => Source.objectStore(url(key), { endpoint: store().s3, anonymous: true, env: {}, cacheDir })
  const first = await open('cache/a.mem')
  t.is(firstDifference(serve(first, first.size).region, a), -1)
  t.is(first.objectStats.diskWrites, 4, 'chunks 0, 1, 3, 4 (2 is zeros, 5 and 6 a hole)')
  const second = await open('cache/b.mem')
  t.is(firstDifference(serve(second, second.size).region, b), -1)
  t.is(second.objectStats.diskHits, 4, "every chunk of b comes from the cache, though at other places in a's file")
  t.is(second.objectStats.requests, 1, "b's manifest, and no chunk")
})

run('a corrupt or missing chunk is an error naming the chunk and gets the fallback, never wrong bytes', async (t) => {
  const file = memoryFile('bad.mem', 4, 4)
  const report = await push(file, 'bad/bad.mem')
  t.is(report.uploaded, 4)
  const manifestUrl = `${store().s3}/${BUCKET}/bad/bad.mem`
  const manifestText = Buffer.from(await (await fetch(manifestUrl)).arrayBuffer()).toString()
  const manifest = JSON.parse(manifestText) as { frameSize: number; list: ({ hash: string; stored: number; frames: string } | null)[] }
  const [zero, one, three] = [manifest.list[0], manifest.list[1], manifest.list[3]]
  if (!zero || !one || !three) throw new Error('chunks 0, 1 and 3 hold data')
  const chunkUrl = (hash: string) => `${store().s3}/${BUCKET}/bad/chunks/${hash}-${manifest.frameSize}.zst`
  // Chunk 3: sound zstd frames, of chunk 0's bytes (random data: as long as chunk 3's): they
  // decompress, and neither the chunk's hash nor its frames' sums are chunk 3's.
  const zeroStored = new Uint8Array(await (await fetch(chunkUrl(zero.hash))).arrayBuffer())
  t.is(zeroStored.length, three.stored)
  t.true((await fetch(chunkUrl(three.hash), { method: 'PUT', body: zeroStored })).ok)
  // Chunk 0: as long as the manifest says, but not a zstd frame. Chunk 1: gone.
  t.true((await fetch(chunkUrl(zero.hash), { method: 'PUT', body: new Uint8Array(zero.stored).fill(7) })).ok)
  t.true((await fetch(chunkUrl(one.hash), { method: 'DELETE' })).ok)

  const source = await Source.objectStore(url('bad/bad.mem'), { endpoint: store().s3, anonymous: true, env: {} })
  const { uffd, region } = serve(source, source.size)
  const bytes = new Uint8Array(region.buffer)
  const expected = readFileSync(file)
  for (const [chunk, hash, why] of [
    [0, zero.hash, /is corrupt \(it does not decompress/],
    [1, one.hash, /HTTP 404|not found/i],
    // Read whole, the chunk's hash says so; read in frames (a fault far from others), their sums.
    [3, three.hash, new RegExp(`is corrupt \\((its bytes hash to ${zero.hash}, not ${three.hash}|frame \\d+ does not match its sum)`)],
  ] as const) {
    const error = nextError(uffd)
    const at = chunk * CHUNK + 5 * PAGE + 17
    t.is(bytes[at], 0, `chunk ${chunk}: the fallback, a zero page`)
    const event = await error
    t.is(event.code, 'ERR_UFFD_SOURCE')
    const cause = event.cause as UffdError
    t.regex(
      cause.message,
      new RegExp(`chunk ${chunk} of s3://${BUCKET}/bad/bad.mem \\(s3://${BUCKET}/bad/chunks/${hash}-${manifest.frameSize}.zst\\)`),
    )
    t.regex(cause.message, why)
    t.is(cause.code, chunk === 1 ? 'ENOENT' : 'EPROTO')
  }
  t.is(source.objectStats.outages, 0, 'a bad chunk is not an outage')
  // Every page is the file's or, in the three bad chunks, the fallback's zeros: never wrong bytes.
  const got = Buffer.from(bytes.buffer, 0, expected.length)
  for (let page = 0; page < expected.length / PAGE; page++) {
    const at = page * PAGE
    const want = expected.subarray(at, at + PAGE)
    const have = got.subarray(at, at + PAGE)
    const bad = [0, 1, 3].includes(Math.floor(at / CHUNK))
    if (!have.equals(want) && !(bad && have.every((b) => b === 0))) t.fail(`page ${page} holds wrong bytes`)
  }
  // The intact chunk is served, right.
  t.deepEqual(got.subarray(4 * CHUNK), expected.subarray(4 * CHUNK))
  // A chunk is named by its content: one found corrupt is not fetched again for its other pages.
  // (The missing one is asked for again: a push may store it meanwhile.)
  t.is(source.objectStats.requests, 4, 'the manifest, chunks 0 and 3 once each, chunk 4')
})

/** Runs `userfaultfd snapshot ...` (the module lib/cli.ts hands it to). */
function cli(args: string[]) {
  const module = join(__dirname, '..', '..', '..', 'dist', 'lib', 'snapshot-cli.js')
  const script = `require(${JSON.stringify(module)}).snapshotMain(process.argv.slice(1)).then((code) => process.exit(code))`
  return spawnSync(process.execPath, ['-e', script, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, AWS_EC2_METADATA_DISABLED: 'true' },
    timeout: 60_000,
  })
}

run('userfaultfd snapshot push: the report, and usage errors (exit 2) that say what is wrong', async (t) => {
  const file = memoryFile('cli.mem', 3, 6)
  const done = cli([
    'push',
    file,
    url('cli/one.mem'),
    '--endpoint',
    store().s3,
    '--anonymous',
    '--chunk-size',
    '1M',
    '--level',
    '1',
    '--json',
  ])
  t.is(done.status, 0, done.stderr)
  t.like(JSON.parse(done.stdout), { chunks: 4, uploaded: 3, holes: 1, chunkPrefix: 'cli/chunks/' })
  const text = cli(['push', file, url('cli/two.mem'), '--endpoint', store().s3, '--anonymous', '--chunk-size', '1M'])
  t.is(text.status, 0, text.stderr)
  t.regex(text.stdout, /^pushed s3:\/\/uffd-push\/cli\/two.mem: 4 chunks, 0 uploaded, 3 already stored, 1 holes;/)
  const source = await Source.objectStore(url('cli/one.mem'), { endpoint: store().s3, anonymous: true, env: {} })
  t.is(firstDifference(serve(source, source.size).region, file), -1)

  for (const [args, message] of [
    [[], /no action given/],
    [['pull'], /unknown action 'pull'/],
    [['push', file], /push needs a FILE and a URL/],
    [['push', file, '/tmp/x'], /is not an object URL/],
    [['push', file, url('x'), '--chunk-size', '1000'], /--chunk-size must be a positive multiple of 4096/],
    [['push', file, url('x'), '--level', 'high'], /--level must be an integer from -7 to 22/],
    [['push', file, url('x'), '--bogus'], /unknown option --bogus/],
  ] as const) {
    const refused = cli([...args])
    t.is(refused.status, 2, `${args.join(' ')}: ${refused.stderr}`)
    t.regex(refused.stderr, message)
    t.regex(refused.stderr, /usage: userfaultfd snapshot push FILE URL/)
  }
  const failed = cli(['push', join(dir, 'nope.mem'), url('x'), '--endpoint', store().s3, '--anonymous'])
  t.is(failed.status, 1)
  t.regex(failed.stderr, /^userfaultfd: ENOENT: .*nope\.mem/)
})

run(
  'userfaultfd firecracker --mem s3://: VMs of several regions restored from a pushed snapshot and from a plain object, every byte right',
  async (t) => {
    const kit = vmKit('uffd-store-restore-')
    t.teardown(() => kit.remove())
    const pages = 64
    const regions = 4
    const mem = kit.memoryFile('store.mem', pages * regions)
    await push(mem, 'restore/pushed.mem')
    await store().put(BUCKET, 'restore/plain.mem', readFileSync(mem))
    const cli = join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js')
    for (const key of ['restore/pushed.mem', 'restore/plain.mem']) {
      const socket = kit.socketPath()
      const args = [cli, 'firecracker', '--socket', socket, '--mem', url(key), '--endpoint', store().s3, '--anonymous', '--once']
      const server = spawnCollecting(process.execPath, args, 'the server', 60_000)
      await until(() => server.output().includes('listening'), 'listening')
      const vm = kit.startPeer(socket, mem, pages, ['--regions', String(regions)])
      const { code, out } = await vm.exit
      t.is(code, 0, `${key}: ${out}`)
      t.regex(out, new RegExp(`"pages":${pages * regions},"wrong":0`), key)
      const done = await server.exit
      t.is(done.code, 0, done.out)
      t.regex(done.out, /"outcome":"served"/)
    }
    // A missing object is said before the server listens; a store above a local file is refused.
    const missing = spawnSync(
      process.execPath,
      [cli, 'firecracker', '--socket', kit.socketPath(), '--mem', url('restore/none.mem'), '--endpoint', store().s3, '--anonymous'],
      { encoding: 'utf8', timeout: 60_000 },
    )
    t.is(missing.status, 1, missing.stdout + missing.stderr)
    t.regex(missing.stdout, /"code":"ENOENT"/)
    t.notRegex(missing.stdout, /listening/)
    const layered = spawnSync(
      process.execPath,
      [cli, 'firecracker', '--socket', kit.socketPath(), '--mem', mem, '--mem', url('restore/plain.mem')],
      { encoding: 'utf8', timeout: 60_000 },
    )
    t.is(layered.status, 2)
    t.regex(layered.stderr, /only the first --mem \(the base\) may be in a store/)
  },
)

run(
  'userfaultfd firecracker --mem s3:// --working-set: the first VM records the trace of the object, the next replays it, every byte right',
  async (t) => {
    const kit = vmKit('uffd-store-trace-')
    t.teardown(() => kit.remove())
    const pages = 64
    const mem = kit.memoryFile('traced.mem', pages * 2)
    await push(mem, 'trace/pushed.mem')
    const trace = join(dir, 'store.trace')
    const cli = join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js')
    const summaries: { replayedPages: number; outcome: string; store?: Record<string, number> }[] = []
    for (let run = 0; run < 2; run++) {
      const socket = kit.socketPath()
      const args = [
        cli,
        'firecracker',
        '--socket',
        socket,
        '--mem',
        url('trace/pushed.mem'),
        '--endpoint',
        store().s3,
        '--anonymous',
        '--working-set',
        trace,
        '--once',
      ]
      const server = spawnCollecting(process.execPath, args, 'the server', 60_000)
      await until(() => server.output().includes('listening'), 'listening')
      // The VM's vCPUs start a little after its handshake (as Firecracker's do): the replay comes first.
      const vm = kit.startPeer(socket, mem, pages, ['--regions', '2', '--delay-ms', '300'])
      const { code, out } = await vm.exit
      t.is(code, 0, out)
      t.regex(out, new RegExp(`"pages":${pages * 2},"wrong":0`))
      const done = await server.exit
      t.is(done.code, 0, done.out)
      if (run === 0) t.regex(done.out, /"event":"trace"/, 'the first VM writes the trace')
      const line = done.out.split('\n').find((l) => l.includes('"event":"summary"'))
      summaries.push(JSON.parse(line ?? '{}'))
    }
    t.is(summaries[0]?.replayedPages, 0)
    t.true((summaries[1]?.replayedPages ?? 0) > 0, JSON.stringify(summaries[1]))
    for (const summary of summaries) {
      // What the store did for the VM: its one chunk (and the manifest's frames, if any), no failure.
      const store = summary.store ?? {}
      t.true((store.requests ?? 0) >= 1 && (store.bytesFetched ?? 0) > 0, JSON.stringify(store))
      t.like(store, { retries: 0, failures: 0, fallbackPages: 0 })
    }
    const saved = JSON.parse(readFileSync(trace, 'utf8')) as { memory: { fingerprint: string }[] }
    t.regex(saved.memory[0]?.fingerprint ?? '', /^etag /)
  },
)

run(
  'userfaultfd firecracker --mem s3:// --working-set-beside: the trace is kept in the store next to the snapshot, replayed by the next server (another host), replaced when the snapshot changes',
  async (t) => {
    const kit = vmKit('uffd-store-beside-')
    t.teardown(() => kit.remove())
    const pages = 64
    const mem = kit.memoryFile('beside.mem', pages * 2)
    const changed = kit.memoryFile('beside-changed.mem', pages * 2, undefined, 7)
    await push(mem, 'beside/vm.mem')
    const cli = join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js')
    const traceUrl = `${url('beside/vm.mem')}.working-set.json`
    const restore = async (expected: string) => {
      const socket = kit.socketPath()
      // Each server a host of its own: nothing of the trace on its disk, its own chunk cache.
      const args = [cli, 'firecracker', '--socket', socket, '--mem', url('beside/vm.mem'), '--endpoint', store().s3]
      args.push('--anonymous', '--working-set-beside', '--cache-dir', mkdtempSync(join(dir, 'host-')), '--once')
      const server = spawnCollecting(process.execPath, args, 'the server', 60_000)
      await until(() => server.output().includes('listening'), 'listening')
      const vm = kit.startPeer(socket, expected, pages, ['--regions', '2', '--delay-ms', '300'])
      const { code, out } = await vm.exit
      t.is(code, 0, out)
      t.regex(out, new RegExp(`"pages":${pages * 2},"wrong":0`))
      const done = await server.exit
      t.is(done.code, 0, done.out)
      const lines = done.out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
      return { lines, summary: lines.find((l) => l.event === 'summary') as { replayedPages: number } }
    }

    const first = await restore(mem)
    t.is(first.summary.replayedPages, 0)
    t.deepEqual(
      first.lines.filter((l) => l.event === 'trace').map((l) => l.path),
      [traceUrl],
      'the first VM stores the trace beside the snapshot',
    )
    const stored = await Source.objectStore(traceUrl, { endpoint: store().s3, anonymous: true, env: {} })
    t.true(stored.size > 0)

    const second = await restore(mem)
    t.true(second.summary.replayedPages > 0, JSON.stringify(second.summary))
    t.false(
      second.lines.some((l) => l.event === 'trace'),
      'a trace there is not written again',
    )

    // A new snapshot under the same key: the old trace is said to be stale, and replaced.
    await push(changed, 'beside/vm.mem')
    const third = await restore(changed)
    t.is(third.summary.replayedPages, 0)
    t.true(
      third.lines.some(
        (l) =>
          l.event === 'error' &&
          l.level === 'warn' &&
          l.code === 'ERR_UFFD_TRACE_STALE' &&
          /recorded for another memory file than the memory object.*a new one is recorded/.test(String(l.message)),
      ),
      JSON.stringify(third.lines),
    )
    t.deepEqual(
      third.lines.filter((l) => l.event === 'trace').map((l) => l.path),
      [traceUrl],
    )
    const fourth = await restore(changed)
    t.true(fourth.summary.replayedPages > 0, JSON.stringify(fourth.summary))
  },
)

run(
  'userfaultfd firecracker --mem s3:// --mem DIFF: a VM restored from a snapshot in the store with a local diff above it, every byte right',
  async (t) => {
    const kit = vmKit('uffd-store-diff-')
    t.teardown(() => kit.remove())
    const pages = 256
    const base = kit.memoryFile('base.mem', pages)
    const changed = (p: number) => p % 11 === 4 || (p >= 40 && p < 48)
    const diff = kit.memoryFile('diff.mem', pages, PAGE, 9, changed)
    const expected = kit.memoryFile('expected.mem', pages)
    const fd = openSync(expected, 'r+')
    for (let p = 0; p < pages; p++) if (changed(p)) writeSync(fd, pageOfSeed(p, PAGE, 9), 0, PAGE, p * PAGE)
    closeSync(fd)
    await push(base, 'diff/base.mem')
    const cli = join(__dirname, '..', '..', '..', 'dist', 'lib', 'cli.js')
    const socket = kit.socketPath()
    const args = [cli, 'firecracker', '--socket', socket, '--mem', url('diff/base.mem'), '--mem', diff]
    args.push('--endpoint', store().s3, '--anonymous', '--once')
    const server = spawnCollecting(process.execPath, args, 'the server', 60_000)
    await until(() => server.output().includes('listening'), 'listening')
    // Two regions of half the memory each.
    const vm = kit.startPeer(socket, expected, pages / 2, ['--regions', '2'])
    const { code, out } = await vm.exit
    t.is(code, 0, `${out}\n${server.output()}`)
    t.regex(out, new RegExp(`"pages":${pages},"wrong":0`))
    const done = await server.exit
    t.is(done.code, 0, done.out)
    t.regex(done.out, /"outcome":"served"/)
  },
)
