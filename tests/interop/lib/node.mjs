// Test harness: start a ymesh node, connect stock y-websocket clients and raw sockets to it.
//
// Everything here talks to 127.0.0.1 only, and every wait is a poll with a deadline.

import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as Y from 'yjs'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'

const here = path.dirname(fileURLToPath(import.meta.url))
export const repoRoot = path.resolve(here, '../../..')
export const ymeshBin = process.env.YMESH_BIN
  ? path.resolve(process.env.YMESH_BIN)
  : path.join(repoRoot, 'target', 'debug', 'ymesh')

export { Y, WebSocket, WebsocketProvider }

// ---------------------------------------------------------------------------------------------
// waiting

/** Resolves after `ms` without keeping the process alive longer than needed. Internal. */
const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Polls `fn` until it returns a truthy value (or a promise of one) and returns that value.
 * Throws after `ms` with `msg` (a string or a function giving one, evaluated at timeout).
 */
export async function waitFor (fn, ms = 10000, msg = 'condition', intervalMs = 10) {
  const deadline = Date.now() + ms
  let lastErr = null
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
      lastErr = null
    } catch (e) {
      lastErr = e
    }
    if (Date.now() >= deadline) {
      const m = typeof msg === 'function' ? msg() : msg
      throw new Error(`timed out after ${ms} ms waiting for ${m}` + (lastErr ? ` (last error: ${lastErr.message})` : ''))
    }
    await tick(Math.min(intervalMs, Math.max(1, deadline - Date.now())))
  }
}

/** Races a promise against a deadline. */
export function withTimeout (promise, ms, msg) {
  let timer
  const t = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${msg}`)), ms)
  })
  return Promise.race([promise, t]).finally(() => clearTimeout(timer))
}

// ---------------------------------------------------------------------------------------------
// nodes

const liveProcs = new Set()
// Every WebsocketProvider adds a process 'exit' listener; tests create many.
process.setMaxListeners(Math.max(process.getMaxListeners(), 500))
process.on('exit', () => {
  for (const p of liveProcs) {
    try { p.kill('SIGKILL') } catch {}
  }
})

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g
const READY = /listening on (https?):\/\/(\[[^\]]+\]|[^\s/:]+):(\d+)/
const MAX_LOG_LINES = 20000

/**
 * Starts `ymesh serve --host 127.0.0.1 --port PORT ...args` and waits for its ready line.
 *
 * `port` defaults to 0 (any free port). `dataDir` defaults to a fresh temporary directory that
 * `stop()` / `kill()` remove; pass one (see `makeDataDir()`) to start a node on an existing
 * data directory (e.g. to restart on it): it is then the node's cwd and `YMESH_DATA_DIR`, and
 * the caller owns it (`stop()` / `kill()` leave it in place).
 *
 * @param {{args?: string[], env?: Record<string,string>, readyTimeoutMs?: number, bin?: string,
 *   port?: number, dataDir?: string}} [opts]
 */
/** The mesh secret every test node gets unless a test passes its own. */
export const TEST_MESH_SECRET = 'interop-test-mesh-secret'

export async function startNode ({
  args = [], env = {}, readyTimeoutMs = 20000, bin = ymeshBin, port: wantPort = 0, dataDir: givenDir = null
} = {}) {
  if (!fs.existsSync(bin)) {
    throw new Error(`ymesh binary not found at ${bin} (build it with \`cargo build\`, or set YMESH_BIN)`)
  }
  const ownsDataDir = !givenDir
  const dataDir = givenDir ? path.resolve(givenDir) : makeDataDir()
  const fullArgs = ['serve', '--host', '127.0.0.1', '--port', String(wantPort), ...args]
  const proc = spawn(bin, fullArgs, {
    cwd: dataDir,
    // Every test node shares one mesh secret (the documented set-up for a person's devices),
    // so nodes that dial each other link; a test that is about admission passes its own
    // --mesh-secret, which wins over the environment.
    env: {
      ...process.env,
      RUST_LOG: 'info',
      YMESH_DATA_DIR: dataDir,
      NO_COLOR: '1',
      YMESH_MESH_SECRET: TEST_MESH_SECRET,
      ...env
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  liveProcs.add(proc)

  const lines = []
  let port = null
  let scheme = 'http'
  let exited = null // {code, signal}
  const exitWaiters = []
  const onLine = (stream) => {
    let buf = ''
    return (chunk) => {
      buf += chunk.toString('utf8')
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).replace(ANSI, '')
        buf = buf.slice(i + 1)
        lines.push(`[${stream}] ${line}`)
        if (lines.length > MAX_LOG_LINES) lines.splice(0, lines.length - MAX_LOG_LINES)
        if (port === null) {
          const m = READY.exec(line)
          if (m) {
            scheme = m[1]
            port = Number(m[3])
          }
        }
      }
    }
  }
  proc.stdout.on('data', onLine('out'))
  proc.stderr.on('data', onLine('err'))
  let spawnError = null
  proc.on('error', (e) => { spawnError = e })
  proc.on('exit', (code, signal) => {
    exited = { code, signal }
    liveProcs.delete(proc)
    for (const w of exitWaiters.splice(0)) w(exited)
  })

  const logs = () => lines.join('\n')
  const logsTail = (n = 80) => lines.slice(-n).join('\n')
  const waitExit = (ms) => exited
    ? Promise.resolve(exited)
    : withTimeout(new Promise((resolve) => exitWaiters.push(resolve)), ms, `ymesh (pid ${proc.pid}) to exit`)
  const cleanup = () => {
    if (ownsDataDir) removeDataDir(dataDir)
  }

  try {
    await waitFor(() => {
      if (spawnError) throw spawnError
      if (exited) throw new Error(`ymesh exited early (code ${exited.code}, signal ${exited.signal})`)
      return port !== null
    }, readyTimeoutMs, 'the "listening on http[s]://HOST:PORT" line')
  } catch (e) {
    if (!exited) {
      proc.kill('SIGKILL')
      await waitExit(5000).catch(() => {})
    }
    cleanup()
    const err = new Error(`${e.message}\n--- ymesh ${fullArgs.join(' ')} output ---\n${logsTail(60)}`)
    throw err
  }

  const url = `${scheme}://127.0.0.1:${port}`
  const node = {
    port,
    url,
    wsUrl: `${scheme === 'https' ? 'wss' : 'ws'}://127.0.0.1:${port}/rooms`,
    proc,
    dataDir,
    logs,
    logsTail,
    exited: () => exited,
    waitExit,
    /** SIGTERM, wait for exit (SIGKILL after `ms`), resolve the exit code (null if killed). */
    async stop (ms = 10000) {
      if (!exited) {
        proc.kill('SIGTERM')
        try {
          await waitExit(ms)
        } catch {
          proc.kill('SIGKILL')
          await waitExit(5000).catch(() => {})
        }
      }
      cleanup()
      return exited ? exited.code : null
    },
    /** SIGKILL, wait for exit. */
    async kill () {
      if (!exited) {
        proc.kill('SIGKILL')
        await waitExit(5000).catch(() => {})
      }
      cleanup()
    },
    async getJson (p, init) {
      return getJson(url + p, init)
    }
  }
  return node
}

/** A fresh, empty temporary data directory (the caller removes it with `removeDataDir`). */
export function makeDataDir () {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'ymesh-interop-'))
}

/** Removes a data directory made by `makeDataDir` (ignores errors). */
export function removeDataDir (dir) {
  if (!dir) return
  try { fs.rmSync(dir, { recursive: true, force: true }) } catch {}
}

/** fetch + JSON; returns {status, body}. */
export async function getJson (url, init = {}) {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10000) })
  const text = await res.text()
  let body = null
  try { body = JSON.parse(text) } catch { body = text }
  return { status: res.status, body }
}

// ---------------------------------------------------------------------------------------------
// stock clients

/**
 * Connects a stock y-websocket v3 provider. `room` goes into the URL as given (the provider
 * does not encode it): pass `encodeURIComponent(name)` for names needing it.
 *
 * @param {string} wsUrl e.g. node.wsUrl
 * @param {string} room
 * @param {object} [opts] provider options, plus `clientID` and `doc`
 */
export function connect (wsUrl, room, opts = {}) {
  const { clientID, doc: givenDoc, ...providerOpts } = opts
  const doc = givenDoc || new Y.Doc()
  if (clientID !== undefined) doc.clientID = clientID
  const provider = new WebsocketProvider(wsUrl, room, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    ...providerOpts
  })
  const client = {
    doc,
    provider,
    awareness: provider.awareness,
    destroyed: false,
    destroy () {
      if (client.destroyed) return
      client.destroyed = true
      try { provider.destroy() } catch {}
      try { provider.awareness.destroy() } catch {}
      try { doc.destroy() } catch {}
    }
  }
  return client
}

export function waitSynced (provider, ms = 10000) {
  return waitFor(() => provider.synced, ms, `provider for room "${provider.roomname}" to sync`)
}

/** Destroys clients (ignores nulls / already destroyed ones). */
export function destroyAll (clients) {
  for (const c of clients) if (c) c.destroy()
}

// ---------------------------------------------------------------------------------------------
// raw sockets

export const MSG_SYNC = 0
export const MSG_AWARENESS = 1
export const MSG_AUTH = 2
export const MSG_QUERY_AWARENESS = 3

/**
 * A raw `ws` socket that records everything it receives.
 * `messages`: Uint8Array[]; `closed`: {code, reason} | null; `error`: Error | null;
 * `unexpectedResponse`: HTTP status when the upgrade was refused.
 */
export function rawSocket (url, wsOpts = {}) {
  const ws = new WebSocket(url, { perMessageDeflate: false, ...wsOpts })
  ws.binaryType = 'nodebuffer'
  const s = {
    ws,
    url,
    messages: [],
    opened: false,
    closed: null,
    error: null,
    unexpectedResponse: null,
    send (bytes) { ws.send(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes)) },
    waitOpen (ms = 5000) {
      return waitFor(() => {
        if (s.opened) return true
        if (s.closed || s.error || s.unexpectedResponse) {
          throw new Error(`socket to ${url} did not open: ${JSON.stringify({ closed: s.closed, error: s.error && s.error.message, status: s.unexpectedResponse })}`)
        }
        return false
      }, ms, `socket to ${url} to open`)
    },
    /** Waits for a message (index >= from) matching pred; returns it. */
    waitMessage (pred = () => true, ms = 5000, from = 0, what = 'a matching message') {
      return waitFor(() => {
        for (let i = from; i < s.messages.length; i++) if (pred(s.messages[i])) return s.messages[i]
        if (s.closed) throw new Error(`socket closed (${s.closed.code}) before ${what}`)
        return null
      }, ms, `${what} on ${url}`)
    },
    waitClose (ms = 5000) {
      return waitFor(() => s.closed, ms, () => `socket to ${url} to close (received ${s.messages.length} messages, types ${s.messages.map((m) => m[0]).join(',')})`)
    },
    close (code, reason) { try { ws.close(code, reason) } catch {} },
    terminate () { try { ws.terminate() } catch {} }
  }
  ws.on('open', () => { s.opened = true })
  ws.on('message', (data) => { s.messages.push(new Uint8Array(data)) })
  ws.on('close', (code, reason) => { s.closed = { code, reason: reason.toString() } })
  ws.on('error', (e) => { s.error = e })
  ws.on('unexpected-response', (_req, res) => {
    s.unexpectedResponse = res.statusCode
    res.resume()
    try { ws.terminate() } catch {}
  })
  return s
}

/** Encodes `[0, 0, varUint8Array(sv)]` for a (by default empty) doc. */
export function syncStep1Frame (doc = null) {
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, MSG_SYNC)
  encoding.writeVarUint(enc, 0)
  encoding.writeVarUint8Array(enc, doc ? Y.encodeStateVector(doc) : Uint8Array.of(0))
  return encoding.toUint8Array(enc)
}

/** Encodes an awareness message for entries [{client, clock, state}] (state null = removed). */
export function awarenessFrame (entries) {
  const inner = encoding.createEncoder()
  encoding.writeVarUint(inner, entries.length)
  for (const e of entries) {
    encoding.writeVarUint(inner, e.client)
    encoding.writeVarUint(inner, e.clock)
    // `json` gives the state's text verbatim (to send text that is not JSON).
    encoding.writeVarString(inner, e.json !== undefined ? e.json : JSON.stringify(e.state))
  }
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, MSG_AWARENESS)
  encoding.writeVarUint8Array(enc, encoding.toUint8Array(inner))
  return encoding.toUint8Array(enc)
}

/** Decodes a type-1 frame into [{client, clock, state}]; throws on other frames. */
export function decodeAwarenessFrame (frame) {
  const dec = decoding.createDecoder(frame)
  const t = decoding.readVarUint(dec)
  if (t !== MSG_AWARENESS) throw new Error(`not an awareness frame (type ${t})`)
  const inner = decoding.createDecoder(decoding.readVarUint8Array(dec))
  const n = decoding.readVarUint(inner)
  const out = []
  for (let i = 0; i < n; i++) {
    const client = decoding.readVarUint(inner)
    const clock = decoding.readVarUint(inner)
    const state = JSON.parse(decoding.readVarString(inner))
    out.push({ client, clock, state })
  }
  return out
}

/** [type, subtype] of a frame (subtype only for sync frames). */
export function frameKind (frame) {
  const dec = decoding.createDecoder(frame)
  const t = decoding.readVarUint(dec)
  return t === MSG_SYNC ? [t, decoding.readVarUint(dec)] : [t]
}

/** Seeded PRNG (mulberry32) for deterministic "random" inputs. */
export function prng (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// ---------------------------------------------------------------------------------------------
// test wrappers

/**
 * Wraps a test body so a failure carries the tail of the node logs, and clients registered
 * through `track` are destroyed whatever happens.
 *
 * @param {() => Array<{logsTail: Function}>} getNodes
 * @param {(track: (c: any) => any) => Promise<void>} fn
 */
export function withCleanup (getNodes, fn) {
  return async () => {
    const clients = []
    const sockets = []
    const track = (c) => {
      if (c && typeof c.terminate === 'function' && c.ws) sockets.push(c)
      else clients.push(c)
      return c
    }
    try {
      await fn(track)
    } catch (e) {
      const nodes = (getNodes() || []).filter(Boolean)
      const tails = nodes.map((n, i) => `--- node ${i} (port ${n.port}) log tail ---\n${n.logsTail(60)}`).join('\n')
      if (tails && e && typeof e.message === 'string') e.message += '\n' + tails
      throw e
    } finally {
      destroyAll(clients)
      for (const s of sockets) s.terminate()
    }
  }
}

/** JSON with object keys sorted (Y.Map iteration order differs between replicas). */
export function canonicalJson (v) {
  const sort = (x) => {
    if (Array.isArray(x)) return x.map(sort)
    if (x && typeof x === 'object' && !(x instanceof Uint8Array)) {
      return Object.fromEntries(Object.keys(x).sort().map((k) => [k, sort(x[k])]))
    }
    return x
  }
  return JSON.stringify(sort(v))
}

/** A canonical JSON of a doc's root types, for convergence checks. */
export function docSnapshot (doc, texts = ['t'], maps = ['m']) {
  const o = {}
  for (const t of texts) o['text:' + t] = doc.getText(t).toString()
  for (const m of maps) o['map:' + m] = doc.getMap(m).toJSON()
  return canonicalJson(o)
}
