// Soak: three nodes in a triangle (A dials B, B dials C, C dials A) with stock y-websocket
// clients on every node, plus a "phone" (one Y.Doc, two providers: one to A, one to C), all
// editing one room while the nodes are SIGKILLed and restarted, one at a time, on the same
// port and data directory. Once the edits stop, every client's document and every node's
// rendering of the room must be the same and hold every edit any client ever made, and every
// node must show both of its links connected.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as net from 'node:net'
import {
  Y, startNode, connect, waitFor, docSnapshot, canonicalJson, destroyAll, makeDataDir, removeDataDir, prng
} from '../lib/node.mjs'

// The whole test (setup, chaos, convergence, teardown) must end well within a minute.
const TEST_TIMEOUT_MS = 60000
// Every wait after the start is also bounded by this budget, so a failure is ours (with the
// evidence) and not the runner's bare cancellation.
const BUDGET_MS = 52000

const ROOM = 'soak-triangle'
const MAX_EDITS = 150 // per client
const EDIT_GAP_MS = [50, 100] // between two edits of one client (random, seeded)
const EDITS_AFTER_CHAOS = 8 // each client's loop ends this many edits after the last restart
const EDIT_LOOP_MS = 35000 // and in any case after this long
const DOWN_MS = 800 // how long a killed node stays down
const LINK_WAIT_MS = 20000 // per round: the restarted node linked again (redial backoff 1-3 s, then 1-9 s)
const CONVERGE_MS = 30000

// ---------------------------------------------------------------------------------------------
// helpers

/** Resolves after `ms` (a pacing delay, not a wait for a condition). */
const pause = (ms) => {
  const until = Date.now() + ms
  return waitFor(() => Date.now() >= until, ms + 1000, 'a pacing delay', Math.max(1, ms))
}

/** Three distinct free ports on 127.0.0.1 (held together while asking, then released). */
async function freePorts (n) {
  const servers = []
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer()
      servers.push(s)
      await new Promise((resolve, reject) => {
        s.once('error', reject)
        s.listen(0, '127.0.0.1', resolve)
      })
    }
    return servers.map((s) => s.address().port)
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(() => resolve()))))
  }
}

/**
 * Starts a node on `port` and `dataDir` with `args`, retrying for a bounded time while the port
 * is still reported in use (just released by the previous process on it).
 */
async function startOn (port, dataDir, args, ms = 15000) {
  const deadline = Date.now() + ms
  for (let attempt = 0; attempt < 200; attempt++) {
    try {
      const n = await startNode({ port, dataDir, args })
      assert.equal(n.port, port, 'the node listens on the port it was given')
      return n
    } catch (e) {
      if (!/in use|EADDRINUSE/i.test(e.message) || Date.now() >= deadline) throw e
      await pause(100)
    }
  }
  throw new Error(`could not start a node on port ${port}`)
}

async function nodeId (node) {
  const { status, body } = await node.getJson('/')
  assert.equal(status, 200, `GET /: ${JSON.stringify(body)}`)
  assert.equal(typeof body.data.node_id, 'string', `GET / has a node id: ${JSON.stringify(body)}`)
  return body.data.node_id
}

async function peers (node) {
  const { status, body } = await node.getJson('/peers')
  assert.equal(status, 200, `GET /peers: ${JSON.stringify(body)}`)
  assert.ok(Array.isArray(body.data), `GET /peers data is an array: ${JSON.stringify(body)}`)
  return body.data
}

const rowStr = (r) => `${r.source}:${r.state}:${r.node_id ? r.node_id.slice(-6) : null}` +
  (r.last_error ? ` (${r.last_error})` : '')

/**
 * Null when `node`'s /peers shows exactly its two links, both connected: the configured one
 * to `dials`, the inbound one from `dialedBy`; otherwise a description of what it shows.
 */
async function linkProblem (node, dials, dialedBy) {
  const rows = await peers(node)
  const config = rows.filter((r) => r.source === 'config')
  const inbound = rows.filter((r) => r.source === 'inbound')
  const ok = config.length === 1 && config[0].state === 'connected' && config[0].node_id === dials &&
    inbound.length === 1 && inbound[0].state === 'connected' && inbound[0].node_id === dialedBy
  return ok ? null : rows.map(rowStr).join(', ')
}

const tokensOf = (text) => text.split(';').filter((s) => s.length > 0)

/** Where two strings first differ, with a little context. */
function firstDiff (a, b) {
  let i = 0
  while (i < a.length && i < b.length && a[i] === b[i]) i++
  if (i === a.length && i === b.length) return null
  const ctx = (s) => JSON.stringify(s.slice(Math.max(0, i - 20), i + 40))
  return `at char ${i} (lengths ${a.length} / ${b.length}): ${ctx(a)} vs ${ctx(b)}`
}

// ---------------------------------------------------------------------------------------------
// the test

test('a triangle of nodes killed and restarted under editing clients loses nothing and converges', {
  timeout: TEST_TIMEOUT_MS
}, async (t) => {
  const t0 = Date.now()
  const remaining = (cap) => Math.max(1000, Math.min(cap, BUDGET_MS - (Date.now() - t0)))
  const timeline = []
  const mark = (what) => timeline.push(`${((Date.now() - t0) / 1000).toFixed(2)}s ${what}`)

  const names = ['A', 'B', 'C']
  const dirs = {}
  const live = {} // name -> current node
  const allNodes = [] // every process started, for cleanup and logs
  const ids = {}
  const clients = []
  let editing = null
  let stopEditing = false

  const [portA, portB, portC] = await freePorts(3)
  const port = { A: portA, B: portB, C: portC }
  const dialTarget = { A: 'B', B: 'C', C: 'A' }
  const dialer = { A: 'C', B: 'A', C: 'B' }
  const argsOf = (n) => ['--peer', `ws://127.0.0.1:${port[dialTarget[n]]}`]
  const wsUrl = (n) => `ws://127.0.0.1:${port[n]}/rooms`

  const start = async (n) => {
    const node = await startOn(port[n], dirs[n], argsOf(n))
    node.name = `${n} (run ${allNodes.filter((x) => x.name.startsWith(n)).length + 1})`
    allNodes.push(node)
    live[n] = node
    mark(`${n} listening (pid ${node.proc.pid})`)
    return node
  }

  /** Waits until all three nodes show both their links connected, to the right nodes. */
  const waitTriangle = async (ms, what) => {
    let last = {}
    await waitFor(async () => {
      let ok = true
      for (const n of names) {
        last[n] = await linkProblem(live[n], ids[dialTarget[n]], ids[dialer[n]])
        if (last[n] !== null) ok = false
      }
      return ok
    }, ms, () => `${what}: every node linked to both others (last /peers: ${JSON.stringify(last)})`, 50)
    last = {}
    mark(`triangle linked (${what})`)
  }

  try {
    for (const n of names) dirs[n] = makeDataDir()
    // C first: its dial to A fails once (A is not up yet) and redials in 1-3 s; B and A find
    // their peers listening. Later C is restarted before A is killed, so no supervisor enters
    // a kill round with grown backoff.
    for (const n of ['C', 'B', 'A']) await start(n)
    for (const n of names) ids[n] = await nodeId(live[n])
    assert.equal(new Set(Object.values(ids)).size, 3, `three distinct node ids: ${JSON.stringify(ids)}`)
    await waitTriangle(remaining(LINK_WAIT_MS), 'at start')

    // Clients: two on A, two on B, one on C, and the phone (one doc, providers to A and C).
    const writers = []
    const addWriter = (tag, nodesOf) => {
      const doc = new Y.Doc()
      const providers = nodesOf.map((n) => {
        const c = connect(wsUrl(n), ROOM, { doc })
        clients.push(c)
        return c.provider
      })
      const w = { tag, doc, providers, via: nodesOf.join('+'), written: [] }
      writers.push(w)
      return w
    }
    addWriter('a1', ['A'])
    addWriter('a2', ['A'])
    addWriter('b1', ['B'])
    addWriter('b2', ['B'])
    addWriter('c1', ['C'])
    addWriter('ph', ['A', 'C'])
    const allProviders = writers.flatMap((w) => w.providers)
    await waitFor(() => allProviders.every((p) => p.synced), remaining(15000), () =>
      `every provider to sync first (${allProviders.map((p) => `${p.url}:${p.synced}`).join(', ')})`)
    mark('clients synced')

    // Edit loops: each client inserts unique tokens at token boundaries of the shared text (so
    // tokens stay whole whatever interleaves), sets a unique map key per edit, and fights over
    // one contested key.
    let chaosDone = false
    let editsAtChaosEnd = null
    const editLoop = async (w, seed) => {
      const rand = prng(seed)
      const end = Date.now() + EDIT_LOOP_MS
      for (let i = 0; i < MAX_EDITS && Date.now() < end && !stopEditing; i++) {
        if (chaosDone && editsAtChaosEnd !== null && i - editsAtChaosEnd[w.tag] >= EDITS_AFTER_CHAOS) break
        const token = `${w.tag}-${i}`
        w.doc.transact(() => {
          const text = w.doc.getText('t')
          const s = text.toString()
          const bounds = [0]
          for (let j = 0; j < s.length; j++) if (s[j] === ';') bounds.push(j + 1)
          text.insert(bounds[Math.floor(rand() * bounds.length)], token + ';')
          w.doc.getMap('m').set(token, { by: w.tag, i })
          if (rand() < 0.2) w.doc.getMap('m').set('contested', token)
        })
        w.written.push(token)
        await pause(EDIT_GAP_MS[0] + Math.floor(rand() * (EDIT_GAP_MS[1] - EDIT_GAP_MS[0])))
      }
    }
    editing = Promise.all(writers.map((w, k) => editLoop(w, 1000 + k)))
    mark('editing started')

    // Chaos: SIGKILL one node at a time (B, then C, then A), restart it on the same port and
    // data directory after DOWN_MS, and wait for the triangle to be whole again.
    await pause(1000)
    for (const n of ['B', 'C', 'A']) {
      const victim = live[n]
      await victim.kill()
      mark(`${n} killed (exit ${JSON.stringify(victim.exited())})`)
      assert.equal(victim.exited()?.signal, 'SIGKILL', `${n} died of SIGKILL`)
      await pause(DOWN_MS)
      await start(n)
      assert.equal(await nodeId(live[n]), ids[n], `${n} keeps its node id across the restart`)
      await waitTriangle(remaining(LINK_WAIT_MS), `after restarting ${n}`)
      await pause(500) // let edits flow through the whole triangle before the next kill
    }
    editsAtChaosEnd = Object.fromEntries(writers.map((w) => [w.tag, w.written.length]))
    chaosDone = true
    mark('chaos done')
    await editing
    editing = null
    mark(`editing done (${writers.map((w) => `${w.tag}:${w.written.length}`).join(' ')})`)
    for (const w of writers) assert.ok(w.written.length >= 30, `${w.tag} made a real number of edits (${w.written.length})`)

    // Convergence: every client doc and every node's rendering equal, holding every edit.
    const expectedTokens = writers.flatMap((w) => w.written).sort()
    const expectedSet = new Set(expectedTokens)
    const views = async () => {
      const out = writers.map((w) => ({
        name: `client ${w.tag} (via ${w.via})`,
        text: w.doc.getText('t').toString(),
        map: w.doc.getMap('m').toJSON(),
        sv: Buffer.from(Y.encodeStateVector(w.doc)).toString('hex')
      }))
      for (const n of names) {
        const node = live[n]
        const r = await node.getJson(`/rooms/${encodeURIComponent(ROOM)}?format=json`)
        if (r.status !== 200) {
          out.push({ name: `node ${n}`, error: `GET /rooms/${ROOM}?format=json: ${r.status} ${JSON.stringify(r.body)}` })
          continue
        }
        const bin = await fetch(`${node.url}/rooms/${encodeURIComponent(ROOM)}`, { signal: AbortSignal.timeout(10000) })
        const d = new Y.Doc()
        if (bin.status === 200) Y.applyUpdate(d, new Uint8Array(await bin.arrayBuffer()))
        out.push({
          name: `node ${n}`,
          text: r.body.data.t ?? '',
          map: r.body.data.m ?? {},
          sv: Buffer.from(Y.encodeStateVector(d)).toString('hex'),
          binText: d.getText('t').toString()
        })
        d.destroy()
      }
      return out
    }
    const problems = (vs) => {
      const out = []
      for (const v of vs) {
        if (v.error) { out.push(`${v.name}: ${v.error}`); continue }
        const toks = tokensOf(v.text)
        const seen = new Map()
        for (const t of toks) seen.set(t, (seen.get(t) || 0) + 1)
        const missing = expectedTokens.filter((t) => !seen.has(t))
        const dup = [...seen].filter(([, c]) => c > 1).map(([t]) => t)
        const extra = [...seen.keys()].filter((t) => !expectedSet.has(t))
        const missingKeys = expectedTokens.filter((t) => !(t in v.map))
        if (missing.length || dup.length || extra.length || missingKeys.length) {
          out.push(`${v.name}: ${toks.length} text tokens, ${Object.keys(v.map).length} map keys; ` +
            `missing in text ${missing.length} ${JSON.stringify(missing.slice(0, 8))}, ` +
            `duplicated ${JSON.stringify(dup.slice(0, 8))}, unexpected ${JSON.stringify(extra.slice(0, 8))}, ` +
            `missing map keys ${missingKeys.length} ${JSON.stringify(missingKeys.slice(0, 8))}`)
        }
        if (v.binText !== undefined && v.binText !== v.text) {
          out.push(`${v.name}: binary and JSON renderings differ ${firstDiff(v.binText, v.text)}`)
        }
      }
      const ref = vs.find((v) => !v.error)
      for (const v of vs) {
        if (v.error || v === ref) continue
        const td = firstDiff(ref.text, v.text)
        if (td) out.push(`text of ${v.name} differs from ${ref.name} ${td}`)
        const keys = new Set([...Object.keys(ref.map), ...Object.keys(v.map)])
        const mdiff = [...keys].filter((k) => canonicalJson(ref.map[k]) !== canonicalJson(v.map[k]))
        if (mdiff.length) {
          out.push(`map of ${v.name} differs from ${ref.name} at ${mdiff.length} keys, e.g. ` +
            mdiff.slice(0, 5).map((k) => `${k}: ${JSON.stringify(ref.map[k])} vs ${JSON.stringify(v.map[k])}`).join('; '))
        }
        if (v.sv !== ref.sv) out.push(`state vector of ${v.name} differs from ${ref.name}: ${v.sv} vs ${ref.sv}`)
      }
      const down = allProviders.filter((p) => !p.wsconnected || !p.synced)
      if (down.length) out.push(`providers not connected+synced: ${down.map((p) => p.url).join(', ')}`)
      return out
    }
    let lastProblems = []
    await waitFor(async () => {
      lastProblems = problems(await views())
      return lastProblems.length === 0
    }, remaining(CONVERGE_MS), () =>
      `every client and node to hold the same document with all ${expectedTokens.length} edits; ` +
      `problems:\n  ${lastProblems.join('\n  ')}`, 200)
    mark('converged')

    // The assertions, on one final snapshot.
    const final = await views()
    assert.deepEqual(problems(final), [], 'the final snapshot is consistent')
    for (const v of final) {
      assert.deepEqual(tokensOf(v.text).sort(), expectedTokens, `${v.name} holds every text token exactly once`)
      assert.deepEqual(Object.keys(v.map).filter((k) => k !== 'contested').sort(), expectedTokens,
        `${v.name} holds every map key`)
      assert.equal(v.text, final[0].text, `${v.name} has the same text as ${final[0].name}`)
      assert.equal(canonicalJson(v.map), canonicalJson(final[0].map), `${v.name} has the same map as ${final[0].name}`)
      assert.equal(v.sv, final[0].sv, `${v.name} has the same state vector as ${final[0].name}`)
    }
    for (const w of writers) {
      assert.equal(docSnapshot(w.doc), docSnapshot(writers[0].doc), `client ${w.tag} equals client ${writers[0].tag}`)
    }
    for (const n of names) {
      assert.equal(await linkProblem(live[n], ids[dialTarget[n]], ids[dialer[n]]), null,
        `${n} shows both its links connected at the end`)
    }
    mark('done')
    t.diagnostic(`timeline: ${timeline.join(' | ')}`)
  } catch (e) {
    if (e && typeof e.message === 'string') {
      const tails = allNodes.map((n) =>
        `--- node ${n.name} (port ${n.port}, pid ${n.proc.pid}, exit ${JSON.stringify(n.exited())}) log tail ---\n${n.logsTail(40)}`)
      e.message += `\n--- timeline ---\n${timeline.join('\n')}\n${tails.join('\n')}`
    }
    throw e
  } finally {
    stopEditing = true
    if (editing) await editing.catch(() => {})
    destroyAll(clients)
    for (const n of allNodes) await n.kill()
    for (const d of Object.values(dirs)) removeDataDir(d)
  }
})
