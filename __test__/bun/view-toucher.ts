// Bun worker: attaches a shared region, reads the first byte of each page of its first half, says
// so, then (told to go on) reads the rest, closes its view (or, told to, leaves it open and stays
// alive until terminated) and posts what it read. Runtime.viewWorker of bun/cases.ts.
import { Region, type SharedRegion } from 'userfaultfd'

declare const self: Worker

let view: Region | undefined
let close = true
const seen: number[] = []

function read(from: number, to: number): void {
  if (!view) return
  const bytes = new Uint8Array(view.buffer)
  for (let page = from; page < to; page++) seen.push(bytes[page * view.pageSize] as number)
}

self.onmessage = (event: MessageEvent<{ shared?: SharedRegion; pages: number; close?: boolean }>) => {
  const { shared, pages } = event.data
  if (shared) {
    view = Region.attach(shared)
    close = event.data.close ?? true
    read(0, pages / 2)
    self.postMessage({ half: true })
    return
  }
  read(pages / 2, pages)
  if (close) view?.close()
  else setInterval(() => view, 1000) // stays alive, its view open, until terminated
  self.postMessage({ seen, closed: view?.closed })
}
