// The test's side of net-child.ts: start it, send it commands, stop it.
import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface, type Interface } from 'node:readline'

export class NetChild {
  readonly port: number
  readonly #child: ChildProcess
  readonly #lines: Interface
  readonly #waiting: ((line: string) => void)[] = []

  private constructor(child: ChildProcess, lines: Interface, port: number) {
    this.#child = child
    this.#lines = lines
    this.port = port
    lines.on('line', (line) => this.#waiting.shift()?.(line))
  }

  /** `http FILE` or `proxy HOST:PORT` (see net-child.ts). */
  static start(mode: 'http' | 'proxy', arg: string): Promise<NetChild> {
    const child = spawn(process.execPath, [join(__dirname, 'net-child.js'), mode, arg], { stdio: ['pipe', 'pipe', 'inherit'] })
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
    return new Promise((resolve, reject) => {
      child.once('error', reject)
      child.once('exit', (code) => reject(new Error(`net-child ${mode} exited with ${code}`)))
      lines.once('line', (line) => resolve(new NetChild(child, lines, (JSON.parse(line) as { port: number }).port)))
    })
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  /** Sends a command; resolves with the counters it answers with. */
  send(command: Record<string, unknown>): Promise<Record<string, number>> {
    return new Promise((resolve) => {
      this.#waiting.push((line) => resolve(JSON.parse(line)))
      this.#child.stdin?.write(`${JSON.stringify(command)}\n`)
    })
  }

  stop(): void {
    this.#lines.close()
    this.#child.kill('SIGKILL')
  }
}
