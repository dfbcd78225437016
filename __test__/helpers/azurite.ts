// Azurite, Azure's storage emulator, for the az:// tests: its blob service from .tools/azurite
// (scripts/test-tools.cjs installs it, with Azure's own blob client, which makes the containers),
// started on a free loopback port with its memory as storage, killed by pid at the end.
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './seaweed'

const root = join(__dirname, '..', '..', '..', '..')
const tools = join(root, '.tools', 'azurite')

/** Azurite's well-known development account and key (public: they are in Azure's documentation). */
export const ACCOUNT = 'devstoreaccount1'
export const ACCOUNT_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

const running = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

/** Azurite's command, or undefined with why not. */
export function azuriteBinary(): { path?: string; why?: string } {
  const path = join(tools, 'node_modules', '.bin', 'azurite-blob')
  return existsSync(path) ? { path } : { why: `no ${path}: run node scripts/test-tools.cjs (or .ci/run)` }
}

interface ContainerClient {
  createIfNotExists(): Promise<unknown>
  getBlockBlobClient(name: string): { uploadData(data: Buffer): Promise<{ etag?: string }> }
}

export class Azurite {
  /** The account's blob endpoint: `http://127.0.0.1:PORT/devstoreaccount1`. */
  readonly endpoint: string
  readonly #process: ChildProcess
  readonly #dir: string

  private constructor(endpoint: string, child: ChildProcess, dir: string) {
    this.endpoint = endpoint
    this.#process = child
    this.#dir = dir
  }

  static async start(): Promise<Azurite> {
    const { path, why } = azuriteBinary()
    if (!path) throw new Error(why)
    const port = await freePort()
    const dir = mkdtempSync(join(tmpdir(), 'uffd-azurite-'))
    const args = ['--blobHost', '127.0.0.1', '--blobPort', String(port), '--inMemoryPersistence']
    // Telemetry off: Azurite would otherwise send usage data to Azure, off the loopback address.
    args.push('--skipApiVersionCheck', '--loose', '--silent', '--disableTelemetry')
    // Run in a folder of its own: whatever it writes there goes with it.
    const child = spawn(path, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    running.add(child)
    let log = ''
    child.stdout?.on('data', (d) => (log += d))
    child.stderr?.on('data', (d) => (log += d))
    const azurite = new Azurite(`http://127.0.0.1:${port}/${ACCOUNT}`, child, dir)
    const deadline = Date.now() + 60_000
    while (!(await listening(port))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await azurite.stop()
        throw new Error(`Azurite did not listen on 127.0.0.1:${port}: ${log}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    return azurite
  }

  /** The container `name`, made if it is not there, through Azure's own client. */
  async container(name: string): Promise<ContainerClient> {
    const blob = this.#client()
    const service = new blob.BlobServiceClient(this.endpoint, new blob.StorageSharedKeyCredential(ACCOUNT, ACCOUNT_KEY))
    const container = service.getContainerClient(name)
    await container.createIfNotExists()
    return container
  }

  /** A SAS token that lets its holder read (and list) the container `name` for an hour. */
  readSas(name: string): string {
    const blob = this.#client()
    const credential = new blob.StorageSharedKeyCredential(ACCOUNT, ACCOUNT_KEY)
    const permissions = blob.ContainerSASPermissions.parse('rl')
    const expiresOn = new Date(Date.now() + 3600_000)
    return blob.generateBlobSASQueryParameters({ containerName: name, permissions, expiresOn }, credential).toString()
  }

  #client(): BlobModule {
    return createRequire(join(tools, 'package.json'))('@azure/storage-blob') as BlobModule
  }

  async stop(): Promise<void> {
    if (this.#process.exitCode === null) {
      const exited = new Promise((resolve) => this.#process.once('exit', resolve))
      this.#process.kill('SIGKILL')
      await exited
    }
    running.delete(this.#process)
    rmSync(this.#dir, { recursive: true, force: true })
  }
}

/** What the tests use of Azure's blob client. */
interface BlobModule {
  BlobServiceClient: new (url: string, credential: unknown) => { getContainerClient(name: string): ContainerClient }
  StorageSharedKeyCredential: new (account: string, key: string) => unknown
  ContainerSASPermissions: { parse(permissions: string): unknown }
  generateBlobSASQueryParameters(
    values: { containerName: string; permissions: unknown; expiresOn: Date },
    credential: unknown,
  ): { toString(): string }
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}
