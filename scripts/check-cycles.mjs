// Fails if the modules of a layer import each other in a circle: the TypeScript of lib/ (with
// index.ts), the scripts of bench/ (with bench/scenarios/), and each Rust crate's modules; and if the core's modules do not keep to the layers
// its lib.rs lists (each imports only its own layer and those below). Type-only imports count too: a layer below the façade
// must not even name it. Run by `npm run lint`; `--list` also prints every module's imports.
//
// TypeScript and the bench's JavaScript: a module is a file; `import`/`export ... from` and
// `import()` are its imports.
// Rust: a module is a file (`foo.rs`, `foo/mod.rs` as `foo`, `foo/bar.rs` as `foo::bar`, `lib.rs` as
// `lib`). A imports B when A's code, outside comments, strings and `#[cfg(test)]` items, names a
// path into B: `crate::b::..`, `super::..`, `self::..` or a child's `child::..`, in a `use` (groups
// expanded) or inline. A path that ends at an item re-exported by `pub use` (`crate::Error`) leads
// to the module that defines it. A `mod child;` declaration is no import.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'

const root = join(dirname(new URL(import.meta.url).pathname), '..')
const crates = ['crates/uffd-core/src', 'crates/uffd-node/src']

// ---- TypeScript and JavaScript ------------------------------------------------------------------

const typescriptFiles = () =>
  ['index.ts', ...readdirSync(join(root, 'lib')).map((name) => join('lib', name))].filter(
    (file) => file.endsWith('.ts') && !file.endsWith('.d.ts'),
  )
const benchFiles = () =>
  ['bench', join('bench', 'scenarios')].flatMap((dir) =>
    readdirSync(join(root, dir))
      .filter((name) => name.endsWith('.mjs'))
      .map((name) => join(dir, name)),
  )

/** Each file's imports among `files` (`./x` is x.ts, `./x.js` its x.ts too, `./x.mjs` itself). */
function importGraph(files) {
  // `import ... from './x'`, `export ... from './x'`, `import('./x')`, `import './x'`, over several lines.
  const specifiers = /(?:\b(?:import|export)\b[^'"`;]*?\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.[^'"]+)['"]/g
  const edges = new Map()
  for (const file of files) {
    const text = readFileSync(join(root, file), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '')
    const targets = new Set()
    for (const [, spec] of text.matchAll(specifiers)) {
      const target = relative(root, resolve(root, dirname(file), spec))
      const hit = [target, `${target}.ts`, target.replace(/\.js$/, '.ts')].find((candidate) => files.includes(candidate))
      if (hit) targets.add(hit)
    }
    edges.set(file, [...targets].sort())
  }
  return edges
}

// ---- Rust: the text a module's imports are read from -------------------------------------------

// A char literal ('x', '\'', '\u{1F600}'), told apart from a lifetime ('a) by its closing quote.
const charLiteral = /^'(?:\\(?:x\w\w|u\{\w+\}|.)|[^\\'])'/su
const rawString = /^b?r(#*)"/

/** The code with comments and the insides of string and char literals blanked out. */
function stripRust(text) {
  let out = ''
  let i = 0
  while (i < text.length) {
    const ahead = text.slice(i, i + 300)
    const raw = /\w/.test(text[i - 1] ?? '') ? null : ahead.match(rawString)
    const char = ahead.match(charLiteral)
    if (ahead.startsWith('//')) {
      const end = text.indexOf('\n', i)
      i = end === -1 ? text.length : end
    } else if (ahead.startsWith('/*')) {
      let depth = 0
      do {
        const step = text.startsWith('/*', i) ? 1 : text.startsWith('*/', i) ? -1 : 0
        depth += step
        i += step === 0 ? 1 : 2
      } while (depth > 0 && i < text.length)
      out += ' '
    } else if (raw) {
      const end = text.indexOf(`"${raw[1]}`, i + raw[0].length)
      i = end === -1 ? text.length : end + 1 + raw[1].length
      out += '""'
    } else if (text[i] === '"') {
      i += 1
      while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1
      i += 1
      out += '""'
    } else if (char) {
      i += char[0].length
      out += "' '"
    } else {
      out += text[i]
      i += 1
    }
  }
  return out
}

/** The code without its `#[cfg(test)]` items: a `mod tests { .. }`, a test-only `use` or `fn`. */
function withoutTestItems(code) {
  const attribute = /#\[cfg\(test\)\]/g
  let out = ''
  let from = 0
  for (let match = attribute.exec(code); match; match = attribute.exec(code)) {
    out += code.slice(from, match.index)
    let i = match.index + match[0].length
    while (i < code.length && code[i] !== ';' && code[i] !== '{') i += 1
    if (code[i] === '{') {
      let depth = 0
      do {
        if (code[i] === '{') depth += 1
        else if (code[i] === '}') depth -= 1
        i += 1
      } while (depth > 0 && i < code.length)
    } else i += 1
    from = i
    attribute.lastIndex = i
  }
  return out + code.slice(from)
}

/** The paths of a use tree (`a::{b, c::{self, D as E}, *}`), each with the name it binds or `glob`. */
function useTree(text) {
  const tokens = text.match(/::|[{},*]|\w+/g) ?? []
  let at = 0
  function tree(prefix) {
    const path = [...prefix]
    while (/^\w+$/.test(tokens[at] ?? '') && tokens[at] !== 'as') {
      path.push(tokens[at++])
      if (tokens[at] === '::') at += 1
    }
    if (tokens[at] === '*') {
      at += 1
      return [{ path, glob: true }]
    }
    if (tokens[at] === '{') {
      at += 1
      const found = []
      while (at < tokens.length && tokens[at] !== '}') {
        found.push(...tree(path))
        if (tokens[at] === ',') at += 1
      }
      at += 1
      return found
    }
    if (path.at(-1) === 'self') path.pop()
    let name = path.at(-1)
    if (tokens[at] === 'as') {
      name = tokens[at + 1]
      at += 2
    }
    return path.length > 0 ? [{ path, name }] : []
  }
  const found = []
  while (at < tokens.length) found.push(...tree([]))
  return found
}

// ---- Rust: modules, their uses and re-exports ----------------------------------------------------

/** Every module file of a crate's `src`, by module path (`lib`, `foo`, `foo::bar`). */
function rustModules(dir) {
  const modules = new Map()
  function walk(at, prefix) {
    for (const name of readdirSync(at).sort()) {
      const path = join(at, name)
      if (statSync(path).isDirectory()) walk(path, [...prefix, name])
      else if (name.endsWith('.rs')) {
        const stem = name.slice(0, -3)
        const segments = stem === 'mod' || (stem === 'lib' && prefix.length === 0) ? prefix : [...prefix, stem]
        modules.set(segments.join('::'), { file: relative(root, path), segments })
      }
    }
  }
  walk(dir, [])
  for (const module of modules.values()) {
    const code = withoutTestItems(stripRust(readFileSync(join(root, module.file), 'utf8')))
    module.uses = []
    module.reexports = new Map()
    module.globs = []
    module.items = new Set(
      [...code.matchAll(/\b(?:struct|enum|fn|trait|type|const|static|union|mod)\s+(\w+)|macro_rules!\s*(\w+)/g)].map(
        ([, item, macro]) => item ?? macro,
      ),
    )
    const uses = /(\bpub(?:\s*\([^)]*\))?\s+)?\buse\s+([^;]+);/g
    for (const [, visibility, tree] of code.matchAll(uses)) {
      for (const use of useTree(tree)) {
        module.uses.push(use.path)
        if (!visibility) continue
        if (use.glob) module.globs.push(use.path)
        else module.reexports.set(use.name, use.path)
      }
    }
    // Inline paths (`crate::stats::bump(..)`), not part of a longer path (`uffd_core::region::..`).
    const inline = code.replace(uses, ' ')
    for (const [path] of inline.matchAll(/(?<![\w:])(?:\w+::)+\w+/g)) module.uses.push(path.split('::'))
  }
  // Test-only module files (`#[cfg(test)] mod helpers;`) are not part of the graph.
  for (const module of [...modules.values()]) {
    const code = stripRust(readFileSync(join(root, module.file), 'utf8'))
    for (const [, child] of code.matchAll(/#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;/g)) {
      const prefix = [...module.segments, child].join('::')
      for (const name of [...modules.keys()]) if (name === prefix || name.startsWith(`${prefix}::`)) modules.delete(name)
    }
  }
  return modules
}

/** The module a path named in `from` leads to, or undefined if it leaves the crate. */
function moduleOf(modules, from, path, depth = 0) {
  let base
  let rest
  if (path[0] === 'crate') [base, rest] = [[], path.slice(1)]
  else if (path[0] === 'self') [base, rest] = [from, path.slice(1)]
  else if (path[0] === 'super') {
    const ups = path.findIndex((segment) => segment !== 'super')
    ;[base, rest] = [from.slice(0, from.length - (ups === -1 ? path.length : ups)), path.slice(ups === -1 ? path.length : ups)]
  } else if (modules.has([...from, path[0]].join('::'))) [base, rest] = [from, path]
  else return undefined
  let at = base
  for (const segment of rest) {
    const child = [...at, segment]
    if (modules.has(child.join('::'))) {
      at = child
      continue
    }
    return depth < 8 ? itemHome(modules, at, segment, depth) : at
  }
  return at
}

/** The module that defines `name`, named in module `at`: through its re-exports. */
function itemHome(modules, at, name, depth) {
  const module = modules.get(at.join('::'))
  const target = module.reexports.get(name)
  if (target) return moduleOf(modules, at, target, depth + 1) ?? at
  if (!module.items.has(name)) {
    for (const glob of module.globs) {
      const from = moduleOf(modules, at, glob, depth + 1)
      if (from && modules.get(from.join('::')).items.has(name)) return from
    }
  }
  return at
}

function rustGraph(dir) {
  const modules = rustModules(join(root, dir))
  const edges = new Map()
  for (const [name, module] of modules) {
    const targets = new Set()
    for (const path of module.uses) {
      const target = moduleOf(modules, module.segments, path)
      if (target === undefined) continue
      const key = target.length === 0 ? 'lib' : target.join('::')
      if (key !== (name || 'lib')) targets.add(key)
    }
    edges.set(name || 'lib', [...targets].sort())
  }
  return edges
}

// ---- Circles -------------------------------------------------------------------------------------

/** The circles a depth-first search meets: one for each import back to a module still on its path. */
function circlesOf(edges) {
  const state = new Map()
  const circles = []
  function visit(module, path) {
    state.set(module, 'open')
    for (const next of edges.get(module)) {
      if (state.get(next) === 'open') circles.push([...path.slice(path.indexOf(next)), next])
      else if (!state.has(next)) visit(next, [...path, next])
    }
    state.set(module, 'done')
  }
  for (const module of edges.keys()) if (!state.has(module)) visit(module, [module])
  return circles
}

function report(layer, edges) {
  const circles = circlesOf(edges)
  const count = [...edges.values()].reduce((sum, targets) => sum + targets.length, 0)
  const modules = `${edges.size} modules, ${count} imports`
  if (circles.length === 0) console.log(`check-cycles: ${layer}: ${modules}, no circle`)
  else {
    const through = new Set(circles.flat()).size
    const list = circles.map((circle) => `\n  ${circle.join(' -> ')}`).join('')
    console.log(`check-cycles: ${layer}: ${modules}, ${circles.length} import circle(s) through ${through} modules:${list}`)
  }
  if (process.argv.includes('--list')) {
    console.log(`check-cycles: ${layer}: the imports of each module:`)
    for (const [module, targets] of edges) console.log(`  ${module} -> ${targets.join(', ') || '(none)'}`)
  }
  return circles.length === 0
}

// ---- The core's layer list ------------------------------------------------------------------------

/**
 * The layers `lib.rs`'s doc lists, by module: its lines `//! N. ...` (and the indented lines that
 * go on with one) name the modules of layer N in backticks; `sys` names `sys` and `sys::*`.
 */
function listedLayers(file) {
  const layerOf = new Map()
  let current
  for (const line of readFileSync(join(root, file), 'utf8').split('\n')) {
    const numbered = line.match(/^\/\/!\s*(\d+)\.\s/)
    if (numbered) current = Number(numbered[1])
    else if (!(current !== undefined && /^\/\/!\s{3,}\S/.test(line))) {
      if (current !== undefined) break
      continue
    }
    for (const [, name] of line.matchAll(/`(\w+)`/g)) if (!layerOf.has(name)) layerOf.set(name, current)
  }
  return layerOf
}

/** Every import of the core goes to a module of its own layer or one below, and every module is on a layer. */
function checkLayers(dir, edges) {
  const layerOf = listedLayers(join(dir, 'lib.rs'))
  const top = (module) => module.split('::')[0]
  const problems = []
  for (const module of edges.keys()) {
    if (module !== 'lib' && !layerOf.has(top(module))) problems.push(`${top(module)} is on no layer`)
  }
  for (const [module, targets] of edges) {
    if (module === 'lib') continue
    for (const target of targets) {
      const [from, to] = [layerOf.get(top(module)), layerOf.get(top(target))]
      if (top(module) !== top(target) && from !== undefined && to !== undefined && to > from) {
        problems.push(`${module} (layer ${from}) imports ${target} (layer ${to}), a layer above it`)
      }
    }
  }
  const unique = [...new Set(problems)]
  if (unique.length === 0) console.log(`check-cycles: ${dir}: every import goes down the layers lib.rs lists`)
  else console.log(`check-cycles: ${dir}: the layers lib.rs lists are not what the code does:\n  ${unique.join('\n  ')}`)
  return unique.length === 0
}

const layers = [
  ['lib/', importGraph(typescriptFiles())],
  ['bench/', importGraph(benchFiles())],
  ...crates.filter((dir) => existsSync(join(root, dir))).map((dir) => [dir, rustGraph(dir)]),
]
const clean = layers.map(([layer, edges]) => report(layer, edges)).every(Boolean)
const core = layers.find(([layer]) => layer === crates[0])
const layered = core ? checkLayers(core[0], core[1]) : true
if (!clean || !layered) process.exit(1)
