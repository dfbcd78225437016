import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { Source } from 'userfaultfd'

const dir = mkdtempSync(join(tmpdir(), 'uffd-layers-'))
const base = join(dir, 'base.bin')
writeFileSync(base, Buffer.alloc(8192, 1))
test.after.always(() => rmSync(dir, { recursive: true, force: true }))

test('Source.layers names each mistake by its place: an empty list, a URL given as a path, a source above the base, a source not in a store', (t) => {
  const refused = (layers: unknown, message: RegExp) =>
    t.throws(() => Source.layers(layers as string[]), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message })
  refused([], /"layers" argument must be a non-empty array: the base first/)
  refused('base.bin', /"layers" argument must be a non-empty array/)
  refused(
    ['s3://snaps/vm.mem', base],
    /"layers\[0\]" argument must be a path, not a URL: open the object with await Source\.objectStore\(url\)/,
  )
  refused([base, 'https://host/diff.bin'], /"layers\[1\]" argument must be a path, not a URL/)
  refused([base, 7], /"layers\[1\]" argument must be a path\. Received type number \(7\)/)
  const file = Source.file(base)
  refused([file, base], /"layers\[0\]" argument must be a path or an object-store source, not a file source: give its path/)
  refused([base, file], /"layers\[1\]" argument must be a path: only the first layer \(the base\) may be an object-store source/)
  t.is(Source.layers([base, base]).kind, 'layers', 'paths are taken')
})
