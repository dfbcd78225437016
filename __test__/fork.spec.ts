// EVENT_FORK in a process of its own: with it, every child this process spawns is a fork event
// (libuv forks before it execs), so it must not share a process with other tests that spawn.
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import test from 'ava'
import { type ForkEvent, Region, Userfaultfd } from 'userfaultfd'
import { within } from './helpers/harness'

const PAGE = 4096

test('fork: a spawn forks the process, and the fork event carries a userfaultfd for the child', (t) => {
  const uffd = new Userfaultfd({ features: ['EVENT_FORK'] })
  const region = Region.anonymous(4 * PAGE)
  uffd.register(region)
  const forks: ForkEvent[] = []
  uffd.on('fork', (event) => forks.push(event))
  uffd.handle(() => {})
  const threads = () => readdirSync('/proc/self/task').length
  const before = threads()
  t.is(spawnSync('true').status, 0)
  return within(
    (async () => {
      while (forks.length === 0) await new Promise((resolve) => setTimeout(resolve, 5))
    })(),
    'the fork event',
  ).then(() => {
    const [{ child, regions }] = forks as [ForkEvent]
    t.truthy(child)
    t.true(child?.features.has('EVENT_FORK'))
    t.deepEqual(
      regions.map((r) => [r.kind, r.address, r.size]),
      [['remote', region.address, region.size]],
      "the child's copy of the registered range",
    )
    t.is(threads(), before + 2, 'the child userfaultfd has its loop thread and, with EVENT_FORK, a pump thread')
    child?.close()
    t.is(threads(), before, 'closing it joins the thread')
    uffd.close()
    region.close()
  })
})
