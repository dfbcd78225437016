// The keeper's process, as a Firecracker server with a keeper starts it: `keeper-main.js PATH GRACE_MS`.
import { runKeeper } from './keeper'

const [path, grace] = process.argv.slice(2)
try {
  runKeeper(path ?? '', Number(grace))
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`)
  process.exit(1)
}
