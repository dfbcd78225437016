// What each fault gets: the page-fault handler proper, for an adopted userfaultfd (the other
// process's memory) served from a snapshot memory file. A fault in region i is the file's bytes at
// the region's offset in the file (from the handshake) plus the fault's offset in the region.
// Pages that a balloon device gave back (a 'remove' event) fault again later: those are served as
// zeros, as the guest expects, instead of the stale snapshot bytes. (serveFirecracker, in the
// package, does all of this and more: record and replay, layers, many VMs.)
import { readSync } from 'node:fs'
import { Source } from 'userfaultfd'

/**
 * Installs the handler on `adoption` ({ uffd, regions, offsets } from listener.accept()), reading
 * the open memory file `fd`. By default each region is served natively (`uffd.serve` with a
 * `Source.file` per region and adaptive readahead: no JavaScript per fault, and pages a balloon
 * gave back are served as zeros, `afterRemove: 'zeros'`); with `js: true` a JavaScript handler
 * reads each page with readSync and copies it in. Returns the sources (empty with `js`), for a
 * prefetch.
 */
export function installHandler({ uffd, regions, offsets }, fd, { js = false } = {}) {
  if (!js) {
    const sources = regions.map((_, i) => Source.file(fd, { offset: offsets[i] }))
    regions.forEach((region, i) => {
      uffd.serve(region, { source: sources[i], readahead: { pages: 16, adaptive: true, maxPages: 256 }, afterRemove: 'zeros' })
    })
    return sources
  }
  const removed = regions.map(() => []) // per region: [start, end) ranges given back
  uffd.on('remove', ({ region, offset, length }) => {
    const index = regions.indexOf(region)
    if (index >= 0 && offset !== undefined) removed[index]?.push([offset, offset + length])
  })
  const wasRemoved = (index, offset) => removed[index].some(([start, end]) => offset >= start && offset < end)
  const pages = new Map() // a reusable page buffer per page size
  uffd.handle(
    (fault) => {
      const index = regions.indexOf(fault.region)
      if (wasRemoved(index, fault.offset)) {
        fault.zero()
        return
      }
      const { pageSize } = fault.region
      if (!pages.has(pageSize)) pages.set(pageSize, Buffer.alloc(pageSize))
      const page = pages.get(pageSize)
      const got = readSync(fd, page, 0, pageSize, offsets[index] + fault.offset)
      if (got < pageSize) page.fill(0, got) // past the end of the file: zeros (main.mjs checks its size first)
      fault.copy(page)
    },
    { keepAlive: true },
  )
  return []
}
