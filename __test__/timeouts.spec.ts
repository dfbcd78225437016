import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import test from 'ava'
import { Region, Userfaultfd } from 'userfaultfd'
import { anonymous, nextError, patternByte, patternPage, withToucher } from './helpers/harness'

const PAGE = 4096
const pager = join(__dirname, 'helpers', 'pager.js')

for (const direct of [true, false]) {
  test(`a handleInWorker handler stuck in synchronous work (direct: ${direct}) is cut off at timeoutMs: the fallback, and ERR_UFFD_TIMEOUT on the owner`, async (t) => {
    const uffd = new Userfaultfd({ timeoutMs: 500 })
    const region = Region.anonymous(4 * PAGE)
    uffd.register(region)
    await uffd.handleInWorker(pager, { workerData: { mode: 'spin' }, direct })
    const errors: string[] = []
    uffd.on('error', (error) => errors.push(error.code))
    await withToucher([uffd, region], async (toucher) => {
      const error = nextError(uffd, 10_000)
      t.deepEqual((await toucher.read(region, { offsets: [5] })).bytes, [0])
      t.is((await error).code, 'ERR_UFFD_TIMEOUT')
      // A second fault while the worker is still stuck: cut off too.
      t.deepEqual((await toucher.read(region, { offsets: [3 * PAGE] })).bytes, [0])
      t.true(uffd.stats.timeouts >= 2)
      t.deepEqual([...new Set(errors)], ['ERR_UFFD_TIMEOUT'])
    })
  })
}

test('a resolve with { wake: false } that is never woken is woken at timeoutMs, with ERR_UFFD_NOT_WOKEN', async (t) => {
  // Long enough that a main thread blocked by another test (a spawnSync) still runs the handler in time.
  const { uffd, region } = anonymous(2, { timeoutMs: 2_000 })
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE), { wake: false })
  })
  await withToucher([uffd, region], async (toucher) => {
    const error = nextError(uffd)
    t.deepEqual((await toucher.read(region, { offsets: [5] })).bytes, [patternByte(0, PAGE, 5)])
    t.is((await error).code, 'ERR_UFFD_NOT_WOKEN')
  })
})

test('timeoutMs: a handler that never settles gets the fallback after the limit', async (t) => {
  const { uffd, region } = anonymous(2, { timeoutMs: 200 })
  uffd.handle(() => new Promise(() => {}))
  await withToucher([uffd, region], async (toucher) => {
    const error = nextError(uffd)
    const started = Date.now()
    t.deepEqual((await toucher.read(region, { offsets: [3] })).bytes, [0])
    t.true(Date.now() - started >= 150, 'not before the limit')
    t.is((await error).code, 'ERR_UFFD_TIMEOUT')
    t.is(uffd.stats.timeouts, 1)
  })
})

test("fallback 'sigbus': an unresolved fault poisons the page and the faulting thread gets SIGBUS", (t) => {
  const child = spawnSync(process.execPath, [join(__dirname, 'helpers', 'child.js'), 'fallback-sigbus'], {
    timeout: 20_000,
    encoding: 'utf8',
  })
  t.is(child.signal, 'SIGBUS', `stdout: ${child.stdout}\nstderr: ${child.stderr}`)
  t.regex(child.stdout, /handler returned/)
})
