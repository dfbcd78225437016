// A handler module that serves another process's memory from its snapshot file: workerData names
// the file and, per region id, where the region's bytes start in it (the handshake's offsets).
import { openSync, readSync } from 'node:fs'
import { workerData } from 'node:worker_threads'
import type { Fault } from 'userfaultfd'

const { snapshot, offsets } = workerData as { snapshot: string; offsets: Array<[number, number]> }
const file = openSync(snapshot, 'r')
const starts = new Map(offsets)

export default function pager(fault: Fault): void {
  const page = Buffer.alloc(fault.region.pageSize)
  readSync(file, page, 0, page.length, (starts.get(fault.region.id) ?? 0) + fault.offset)
  fault.copy(page)
}
