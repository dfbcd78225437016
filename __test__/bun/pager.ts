// Bun: the handler module of handleInWorker, serving each page filled with (page index + 1).
import type { Fault } from 'userfaultfd'

export default function pager(fault: Fault): void {
  fault.copy(new Uint8Array(fault.region.pageSize).fill(fault.offset / fault.region.pageSize + 1))
}
