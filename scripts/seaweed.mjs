// SeaweedFS for the bench and the example: `weed server -s3` on free loopback ports, in a folder
// of its own, ready once a bucket can be made (its S3 port answers before the filer behind it is).
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A loopback port that is free, and whose + 10000 (SeaweedFS's gRPC port) is free too. */
export async function freePort() {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 20000)
    const free = (p) =>
      new Promise((done) => {
        const s = createServer().once('error', () => done(false))
        s.listen(p, '127.0.0.1', () => s.close(() => done(true)))
      })
    if ((await free(port)) && (await free(port + 10000))) return port
  }
}

/**
 * Starts `weed` (its path) and makes `bucket`; resolves with the S3 endpoint and `stop()`, which
 * kills it by pid and removes its folder (its data and its logs). `extra` arguments go after the usual ones.
 */
export async function startSeaweed(weed, bucket, extra = []) {
  const dir = mkdtempSync(join(tmpdir(), 'uffd-seaweed-'))
  const [master, volume, filer, s3] = [await freePort(), await freePort(), await freePort(), await freePort()]
  // Its logs go to its folder too (by default, weed leaves them in TMPDIR).
  const args = [`-logdir=${dir}`, 'server', `-dir=${dir}`, '-ip=127.0.0.1', '-ip.bind=127.0.0.1', `-master.port=${master}`]
  args.push(`-volume.port=${volume}`, `-filer.port=${filer}`, '-s3', `-s3.port=${s3}`)
  // The gateway's Iceberg and Lance listeners have fixed ports: off, so that two can run.
  args.push('-s3.port.iceberg=0', '-s3.port.lance=0', ...extra)
  const child = spawn(weed, args, { stdio: 'ignore' })
  const stop = () => {
    child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
  const endpoint = `http://127.0.0.1:${s3}`
  for (const started = Date.now(); ; ) {
    const made = await fetch(`${endpoint}/${bucket}`, { method: 'PUT' }).catch(() => undefined)
    if (made?.ok) return { endpoint, stop }
    if (Date.now() - started > 60_000) {
      stop()
      throw new Error('SeaweedFS did not start within 60 s')
    }
    await new Promise((done) => setTimeout(done, 200))
  }
}
