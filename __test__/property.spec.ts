// Hostile input: every public function, called with random and hostile arguments, either works
// or throws a UffdError or TypeError; the process never crashes, and real faults still work after.
import test from 'ava'
import fc from 'fast-check'
import { Region, Source, UffdError, Userfaultfd } from 'userfaultfd'
import { patternByte, patternPage, Toucher } from './helpers/harness'

const CALLS = 100_000
const PAGE = 4096

const hostile = fc.oneof(
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 }),
  fc.integer({ min: 0, max: 64 }).map((pages) => pages * PAGE),
  fc.constantFrom(-1, 0.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, 2 ** 64, -0, 4095, 4097),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }),
  fc.string(),
  fc.constantFrom(undefined, null, true, {}, [], () => 1, Symbol('x')),
  fc.constantFrom(new Uint8Array(0), new Uint8Array(PAGE), new Uint8Array(100), new DataView(new ArrayBuffer(PAGE))),
)

function allowed(error: unknown): boolean {
  return error instanceof UffdError || error instanceof TypeError || error instanceof RangeError
}

test(`${CALLS} calls with hostile arguments: each works or throws UffdError or TypeError`, async (t) => {
  const uffd = new Userfaultfd()
  const other = new Userfaultfd()
  const region = Region.anonymous(64 * PAGE)
  const shmem = Region.shmem(16 * PAGE)
  const closed = Region.anonymous(PAGE)
  closed.close()
  uffd.register(region)
  const detached = new ArrayBuffer(PAGE)
  structuredClone(detached, { transfer: [detached] })
  const regions = fc.constantFrom(region, shmem, closed, null, {}, detached)
  const anything = fc.oneof(hostile, regions)
  const calls: Array<[string, fc.Arbitrary<unknown[]>, (args: unknown[]) => unknown]> = [
    [
      'copy',
      fc.tuple(regions, hostile, fc.oneof(hostile, fc.constant(detached)), anything),
      (a) => uffd.copy(...(a as Parameters<Userfaultfd['copy']>)),
    ],
    ['zero', fc.tuple(regions, hostile, hostile, anything), (a) => uffd.zero(...(a as Parameters<Userfaultfd['zero']>))],
    ['continue', fc.tuple(regions, hostile, hostile, anything), (a) => uffd.continue(...(a as Parameters<Userfaultfd['continue']>))],
    ['wake', fc.tuple(regions, hostile, hostile), (a) => uffd.wake(...(a as Parameters<Userfaultfd['wake']>))],
    ['poison', fc.tuple(regions, hostile, hostile), (a) => other.poison(...(a as Parameters<Userfaultfd['poison']>))],
    [
      'writeProtect',
      fc.tuple(regions, hostile, hostile, anything),
      (a) => uffd.writeProtect(...(a as Parameters<Userfaultfd['writeProtect']>)),
    ],
    ['move', fc.tuple(regions, hostile, regions, hostile, hostile), (a) => other.move(...(a as Parameters<Userfaultfd['move']>))],
    ['register', fc.tuple(regions, anything), (a) => other.register(...(a as Parameters<Userfaultfd['register']>))],
    ['unregister', fc.tuple(regions, anything), (a) => other.unregister(...(a as Parameters<Userfaultfd['unregister']>))],
    ['dirtyPages', fc.tuple(regions, anything), (a) => uffd.dirtyPages(...(a as Parameters<Userfaultfd['dirtyPages']>))],
    ['discard', fc.tuple(hostile, hostile), (a) => shmem.discard(...(a as [number, number]))],
    ['Region.anonymous', fc.tuple(hostile), (a) => Region.anonymous(a[0] as number).close()],
    ['Region.attach', fc.tuple(anything), (a) => Region.attach(a[0] as never)],
    ['Userfaultfd.attach', fc.tuple(anything), (a) => Userfaultfd.attach(a[0] as never)],
    ['Source.bytes', fc.tuple(anything), (a) => Source.bytes(a[0] as never)],
    ['new Userfaultfd', fc.tuple(anything), (a) => new Userfaultfd(a[0] as never).close()],
  ]
  const counts = new Map<string, { ok: number; refused: number }>()
  const call = fc.oneof(...calls.map(([name, args], index) => args.map((sample) => ({ index, name, sample }))))
  const property = fc.property(call, ({ index, name, sample }) => {
    const run = (calls[index] as (typeof calls)[number])[2]
    const count = counts.get(name) ?? { ok: 0, refused: 0 }
    counts.set(name, count)
    try {
      run(sample)
      count.ok++
    } catch (error) {
      if (!allowed(error)) throw new Error(`${name} threw ${String(error)}`)
      count.refused++
    }
  })
  fc.assert(property, { numRuns: CALLS })
  t.log(Object.fromEntries(counts))
  // Still working: a real fault from another thread, served with real bytes.
  const fresh = Region.anonymous(4 * PAGE)
  uffd.register(fresh)
  uffd.handle((fault) => {
    fault.copy(patternPage(fault.offset, PAGE))
  })
  const toucher = new Toucher()
  try {
    t.deepEqual((await toucher.read(fresh, { offsets: [2 * PAGE + 5] })).bytes, [patternByte(2 * PAGE, PAGE, 5)])
  } finally {
    await toucher.terminate()
    for (const r of [fresh, region, shmem]) r.close()
    uffd.close()
    other.close()
  }
})
