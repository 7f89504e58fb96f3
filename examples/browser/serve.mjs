#!/usr/bin/env node
// A tiny static server for the browser example (no dependencies beyond Node itself).
//
//   /            -> index.html (this directory)
//   /<file>      -> a file in this directory
//   /vendor/...  -> ../node_modules/... (the ES module files of yjs, y-websocket,
//                   y-protocols and lib0 that index.html's import map points at)
//
// Run from examples/ after `npm ci`:
//
//   node browser/serve.mjs                 # http://127.0.0.1:8080/
//   node browser/serve.mjs --port 0        # any free port (printed)
//   node browser/serve.mjs --host 0.0.0.0 --port 8080
//   node browser/serve.mjs --check         # check index.html's import map, then exit
//
// Then open http://127.0.0.1:8080/?server=ws://127.0.0.1:3913/rooms&room=demo
// (both query parameters are optional). It prints `serving http://HOST:PORT/` once ready and
// logs every request that is not answered with a file (so a missing import-map entry shows).

import * as http from 'node:http'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const roots = {
  page: here,
  vendor: path.resolve(here, '..', 'node_modules')
}

function arg (name, fallback) {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback
}
if (process.argv.includes('--check')) process.exit(checkImportMap())

const host = arg('host', process.env.HOST || '127.0.0.1')
const port = Number(arg('port', process.env.PORT || 8080))

const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon'
}

/**
 * `--check`: walks the static imports of the page's modules (from yjs and y-websocket on)
 * and reports bare imports missing from index.html's import map, mapped files that do not
 * exist, and entries that differ from what the package's "exports" give a browser. Returns
 * the exit code. Run it after changing the versions in package.json.
 */
function checkImportMap () {
  const html = fs.readFileSync(path.join(here, 'index.html'), 'utf8')
  const m = /<script type="importmap">([\s\S]*?)<\/script>/.exec(html)
  if (!m) {
    console.error('index.html has no import map')
    return 1
  }
  const imports = JSON.parse(m[1]).imports
  const toFile = (address) => path.join(roots.vendor, address.replace(/^\.\/vendor\//, ''))
  const conditions = ['browser', 'module', 'import', 'default']
  const pick = (t) => {
    if (typeof t === 'string' || t === null) return t
    for (const c of conditions) if (t && c in t) return pick(t[c])
    return undefined
  }
  const problems = []
  for (const [spec, address] of Object.entries(imports)) {
    const pkg = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]
    const pj = JSON.parse(fs.readFileSync(path.join(roots.vendor, pkg, 'package.json'), 'utf8'))
    const sub = '.' + spec.slice(pkg.length)
    const target = pj.exports ? pick(pj.exports[sub]) : (sub === '.' ? pj.module || pj.main : sub)
    const expected = target && path.join(roots.vendor, pkg, target)
    if (expected !== toFile(address)) problems.push(`${spec}: mapped to ${address}, package exports give ${target}`)
  }
  const seen = new Set()
  const queue = ['yjs', 'y-websocket'].map((s) => toFile(imports[s]))
  while (queue.length) {
    const file = queue.pop()
    if (seen.has(file)) continue
    seen.add(file)
    if (!fs.existsSync(file)) {
      problems.push(`missing file ${path.relative(roots.vendor, file)}`)
      continue
    }
    const src = fs.readFileSync(file, 'utf8')
    for (const im of src.matchAll(/^(?:import|export)\s*(?:[^'";]*?\sfrom\s*)?['"]([^'"]+)['"]/gm)) {
      const spec = im[1]
      if (spec.startsWith('.') || spec.startsWith('/')) queue.push(path.resolve(path.dirname(file), spec))
      else if (imports[spec]) queue.push(toFile(imports[spec]))
      else problems.push(`${path.relative(roots.vendor, file)} imports "${spec}", which the import map lacks`)
    }
  }
  for (const p of problems) console.error(p)
  console.log(`${seen.size} module files reachable, ${problems.length} problem(s)`)
  return problems.length ? 1 : 0
}

if (!fs.existsSync(path.join(roots.vendor, 'yjs'))) {
  console.error(`warning: ${roots.vendor} has no yjs; run \`npm ci\` in ${path.dirname(here)} first`)
}

/** Maps a URL path to a file under `root`, or null when it escapes it. */
function fileUnder (root, urlPath) {
  let rel
  try {
    rel = decodeURIComponent(urlPath)
  } catch {
    return null
  }
  const file = path.resolve(root, '.' + path.posix.normalize('/' + rel))
  return file === root || file.startsWith(root + path.sep) ? file : null
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost')
  const reply = (status, body) => {
    console.error(`${req.method} ${url.pathname} -> ${status}`)
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' })
    res.end(body + '\n')
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'method not allowed')

  let file
  if (url.pathname === '/') file = path.join(roots.page, 'index.html')
  else if (url.pathname.startsWith('/vendor/')) file = fileUnder(roots.vendor, url.pathname.slice('/vendor/'.length))
  else file = fileUnder(roots.page, url.pathname.slice(1))
  if (!file) return reply(400, 'bad path')

  fs.stat(file, (err, st) => {
    if (err || !st.isFile()) return reply(404, 'not found')
    res.writeHead(200, {
      'content-type': types[path.extname(file)] || 'application/octet-stream',
      'content-length': st.size,
      'cache-control': 'no-cache'
    })
    if (req.method === 'HEAD') return res.end()
    fs.createReadStream(file).pipe(res)
  })
})

server.listen(port, host, () => {
  const addr = server.address()
  const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
  console.log(`serving http://${shownHost}:${addr.port}/`)
})

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close()
    server.closeAllConnections?.()
    process.exit(0)
  })
}
