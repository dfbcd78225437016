// JavaScript handlers on the fault path: the cases both runtimes run are in cases/handlers.ts (Bun
// runs them in bun/handlers.test.ts); here, what a node:worker_threads worker of its own shows.
import { Worker } from 'node:worker_threads'
import test from 'ava'
import { avaCases } from './cases/ava'
import { handlerCases } from './cases/handlers'
import { anonymous, within } from './helpers/harness'

avaCases(handlerCases)

test('a direct reader whose own thread touches registered memory: the loop thread takes its turn, the fallback serves it, ERR_UFFD_SELF_FAULT, no hang', async (t) => {
  const { uffd, region } = anonymous(4)
  // A worker that reads the fd itself, then touches the region on its own thread.
  const worker = new Worker(
    `const { Region, Userfaultfd } = require('userfaultfd'); const { workerData, parentPort } = require('node:worker_threads');
     const uffd = Userfaultfd.attach(workerData.uffd); const region = Region.attach(workerData.region);
     const errors = []; uffd.on('error', (e) => errors.push(e.code));
     uffd.handle((fault) => { fault.copy(new Uint8Array(4096).fill(9)) }, { direct: true });
     setTimeout(() => {
       const byte = new Uint8Array(region.buffer)[5];
       const wait = () => errors.length ? parentPort.postMessage({ byte, errors }) : setTimeout(wait, 10);
       wait();
     }, 50);`,
    { eval: true, workerData: { uffd: uffd.share(), region: region.share() } },
  )
  try {
    const answer = await within(new Promise<{ byte: number; errors: string[] }>((resolve) => worker.once('message', resolve)), 'the worker')
    t.is(answer.byte, 0, 'the fallback (ZEROPAGE) served the reader’s own fault')
    t.deepEqual(answer.errors, ['ERR_UFFD_SELF_FAULT'])
    t.is(uffd.stats.selfFaults, 1)
  } finally {
    await worker.terminate()
    uffd.close()
    region.close()
  }
})
