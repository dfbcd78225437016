// Run as a child process: a handler that never resolves, with fallback 'sigbus'. The worker that
// faults gets SIGBUS, which kills this process: the parent test checks for that signal.
import { Worker } from 'node:worker_threads'
import { Region, Userfaultfd } from 'userfaultfd'

const uffd = new Userfaultfd({ fallback: 'sigbus' })
const region = Region.anonymous(4096 * 2)
uffd.register(region)
uffd.on('error', () => {})
uffd.handle(() => {
  console.log('handler returned without resolving')
})
const worker = new Worker(
  `const { Region } = require('userfaultfd'); const { workerData } = require('node:worker_threads');
   const r = Region.attach(workerData); console.log('read', new Uint8Array(r.buffer)[4096])`,
  { eval: true, workerData: region.share() },
)
worker.on('exit', () => {
  console.log('the worker exited: no SIGBUS')
  process.exit(3)
})
