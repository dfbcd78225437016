// The page-fault handler proper: it serves an adopted userfaultfd (the other process's memory) from
// a snapshot memory file. Each fault maps one page of the file: the page at the region's offset
// in the file (from the handshake) plus the fault's offset in the region. Pages that a balloon
// device gave back (a 'remove' event) fault again later: those are served as zeros, as the guest
// expects, instead of the stale snapshot bytes.
import { closeSync, openSync, readSync } from 'node:fs'

/**
 * Serves `adoption` ({ uffd, regions, offsets } from listener.accept()) from the file at
 * `snapshotPath`. `done` resolves when the peer hangs up (the userfaultfd has then closed itself)
 * or on `close()`; any other 'error' event is passed to `onError`.
 */
export function serve({ uffd, regions, offsets }, snapshotPath, onError) {
  const file = openSync(snapshotPath, 'r')
  const removed = regions.map(() => []) // per region: [start, end) ranges given back
  const pages = new Map() // a reusable page buffer per page size
  let zeroed = 0

  uffd.on('remove', ({ region, offset, length }) => {
    const index = regions.indexOf(region)
    if (index >= 0 && offset !== undefined) removed[index].push([offset, offset + length])
  })

  uffd.handle(
    (fault) => {
      const index = regions.indexOf(fault.region)
      const { pageSize } = fault.region
      if (removed[index].some(([start, end]) => fault.offset >= start && fault.offset < end)) {
        zeroed++
        fault.zero()
        return
      }
      if (!pages.has(pageSize)) pages.set(pageSize, Buffer.alloc(pageSize))
      const page = pages.get(pageSize)
      const got = readSync(file, page, 0, pageSize, offsets[index] + fault.offset)
      if (got < pageSize) page.fill(0, got) // past the end of the file: zeros
      fault.copy(page)
    },
    { keepAlive: true },
  )

  let finish
  const done = new Promise((resolve) => {
    finish = resolve
  })
  uffd.on('error', (error) => {
    if (error.code === 'ERR_UFFD_PEER_GONE') finish()
    else onError(error)
  })
  let closed = false
  const close = () => {
    if (closed) return
    closed = true
    uffd.close()
    closeSync(file)
    finish()
  }
  return { done, close, zeroed: () => zeroed }
}
