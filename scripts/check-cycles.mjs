// Fails if the TypeScript modules of lib/ (and index.ts) import each other in a circle. Type-only
// imports count too: a layer below the façade must not even name it. Run by `npm run lint`.
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'

const root = join(dirname(new URL(import.meta.url).pathname), '..')
const files = ['index.ts', ...readdirSync(join(root, 'lib')).map((name) => join('lib', name))].filter(
  (file) => file.endsWith('.ts') && !file.endsWith('.d.ts'),
)
// `import ... from './x'`, `export ... from './x'`, `import('./x')`, `import './x'`, over several lines.
const specifiers = /(?:\b(?:import|export)\b[^'"`;]*?\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.[^'"]+)['"]/g

const edges = new Map()
for (const file of files) {
  const text = readFileSync(join(root, file), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '')
  const targets = new Set()
  for (const [, spec] of text.matchAll(specifiers)) {
    const target = relative(root, resolve(root, dirname(file), spec)).replace(/\.js$/, '')
    if (files.includes(`${target}.ts`)) targets.add(`${target}.ts`)
  }
  edges.set(file, [...targets].sort())
}

// Depth-first search; a module met again while still on the path closes a circle.
const state = new Map()
const circles = []
function visit(file, path) {
  state.set(file, 'open')
  for (const next of edges.get(file)) {
    if (state.get(next) === 'open') circles.push([...path.slice(path.indexOf(next)), next].join(' -> '))
    else if (!state.has(next)) visit(next, [...path, next])
  }
  state.set(file, 'done')
}
for (const file of files) if (!state.has(file)) visit(file, [file])

const count = [...edges.values()].reduce((sum, targets) => sum + targets.length, 0)
if (circles.length > 0) {
  console.error(`check-cycles: ${circles.length} import circle(s) in lib/:\n  ${circles.join('\n  ')}`)
  process.exit(1)
}
console.log(`check-cycles: ${files.length} modules, ${count} imports, no circle`)
if (process.argv.includes('--list')) for (const [file, targets] of edges) console.log(`  ${file} -> ${targets.join(', ') || '(none)'}`)
