// Server-to-server replication: two ymesh nodes linked over the mesh control channel
// (`--peer ws://127.0.0.1:PORT` dials the peer's `/_mesh`), each with its own stock
// y-websocket clients. Rooms replicate both ways, rooms made while a peer is down reach it
// when it is back, and a peer without the mesh secret gets nothing.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  Y, startNode, connect, waitSynced, waitFor, docSnapshot, canonicalJson, destroyAll, makeDataDir, removeDataDir
} from '../lib/node.mjs'

// ---------------------------------------------------------------------------------------------
// helpers

/**
 * Runs `fn(ctx)` with everything it starts cleaned up whatever happens: clients, nodes
 * (SIGKILLed if still running) and data directories. A failure carries every node's log tail.
 */
function scenario (fn) {
  return async () => {
    const ctx = {
      nodes: [],
      clients: [],
      dirs: [],
      node (n, name) { n.name = name; ctx.nodes.push(n); return n },
      client (c) { ctx.clients.push(c); return c },
      dir (d) { ctx.dirs.push(d); return d }
    }
    try {
      await fn(ctx)
    } catch (e) {
      const tails = ctx.nodes.map((n) =>
        `--- node ${n.name} (port ${n.port}, pid ${n.proc.pid}, exit ${JSON.stringify(n.exited())}) log tail ---\n${n.logsTail(60)}`)
      if (e && typeof e.message === 'string' && tails.length) e.message += '\n' + tails.join('\n')
      throw e
    } finally {
      destroyAll(ctx.clients)
      for (const n of ctx.nodes) await n.kill()
      for (const d of ctx.dirs) removeDataDir(d)
    }
  }
}

/** The mesh URL of a node, as `--peer` takes it. */
const peerUrl = (node) => `ws://127.0.0.1:${node.port}`

/** `GET /` → `data.node_id`. */
async function nodeId (node) {
  const { status, body } = await node.getJson('/')
  assert.equal(status, 200, `GET /: ${JSON.stringify(body)}`)
  assert.equal(typeof body.data.node_id, 'string', `GET / has a node id: ${JSON.stringify(body)}`)
  assert.ok(body.data.node_id.length > 0)
  return body.data.node_id
}

/** `GET /peers` → `data`. */
async function peers (node) {
  const { status, body } = await node.getJson('/peers')
  assert.equal(status, 200, `GET /peers: ${JSON.stringify(body)}`)
  assert.ok(Array.isArray(body.data), `GET /peers data is an array: ${JSON.stringify(body)}`)
  return body.data
}

/** The row of `node`'s configured peer (the one from `--peer`). */
async function configuredPeer (node) {
  const rows = (await peers(node)).filter((p) => p.source === 'config')
  assert.equal(rows.length, 1, `exactly one configured peer: ${JSON.stringify(rows)}`)
  return rows[0]
}

/** Waits until `node`'s configured peer is connected to the node `id`; returns the row. */
async function waitLinked (node, id, ms = 20000) {
  let last = null
  return waitFor(async () => {
    last = await configuredPeer(node)
    return last.state === 'connected' && last.node_id === id ? last : null
  }, ms, () => `the configured peer to be connected to ${id} (last row: ${JSON.stringify(last)})`, 50)
}

/** Waits until `node` lists an inbound, connected link from the node `id`. */
async function waitInbound (node, id, ms = 20000) {
  let last = null
  return waitFor(async () => {
    last = await peers(node)
    return last.find((p) => p.source === 'inbound' && p.state === 'connected' && p.node_id === id)
  }, ms, () => `an inbound connected link from ${id} (peers: ${JSON.stringify(last)})`, 50)
}

/** The row of GET /rooms?all=true for `room` (or undefined). */
async function storedRow (node, room) {
  const { status, body } = await node.getJson('/rooms?all=true')
  assert.equal(status, 200, `GET /rooms?all=true: ${JSON.stringify(body)}`)
  assert.ok(Array.isArray(body.data), `GET /rooms?all=true data is an array: ${JSON.stringify(body)}`)
  return body.data.find((r) => r.name === room)
}

/** `GET /rooms/{room}?format=json` → {status, body}. */
const roomJson = (node, room) => node.getJson(`/rooms/${encodeURIComponent(room)}?format=json`)

/**
 * Asserts that `probe()` keeps returning null for `ms`: it is called repeatedly (every
 * `intervalMs`) until the time is up; the first non-null value it returns (a description of
 * what should not have happened) fails the assertion at once.
 */
async function assertStaysAbsent (probe, ms, what, intervalMs = 100) {
  const end = Date.now() + ms
  let seen = null
  let checks = 0
  // waitFor retries on exceptions; a probe error must fail the test, so catch it here.
  let probeError = null
  await waitFor(async () => {
    try {
      seen = await probe()
    } catch (e) {
      probeError = e
      return true
    }
    checks++
    return seen !== null || Date.now() >= end
  }, ms + 15000, `${what}: the absence check to finish`, intervalMs)
  if (probeError) throw probeError
  assert.equal(seen, null, `${what}: ${seen}`)
  assert.ok(checks >= 2, `${what}: checked more than once (${checks})`)
}

/**
 * Starts a node on `port` (and `dataDir`), retrying for a bounded time while the port is still
 * reported in use (it was just released by the previous node on it).
 */
async function startOn (port, dataDir, opts = {}, ms = 15000) {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      const n = await startNode({ ...opts, port, dataDir })
      assert.equal(n.port, port, 'the restarted node listens on the same port')
      return n
    } catch (e) {
      if (!/in use|EADDRINUSE/i.test(e.message) || Date.now() >= deadline) throw e
      const retryAt = Date.now() + 100 // bounded by `deadline`
      await waitFor(() => Date.now() >= retryAt, 1000, 'the retry delay')
    }
  }
}

const svHex = (doc) => Buffer.from(Y.encodeStateVector(doc)).toString('hex')

const sameState = (a, b) => docSnapshot(a) === docSnapshot(b) && svHex(a) === svHex(b)

async function waitConverged (clients, ms, what) {
  await waitFor(() => clients.every((c) => sameState(c.doc, clients[0].doc)), ms,
    () => `${what}: ` + clients.map((c) => `${docSnapshot(c.doc)} sv=${svHex(c.doc)}`).join(' | '))
}

/** Writes, into `a` and `b` in the same tick, interleaved Y.Text and Y.Map edits. */
function editBoth (a, b, tag) {
  a.doc.transact(() => {
    a.doc.getText('t').insert(a.doc.getText('t').length, `[a ${tag}]`)
    a.doc.getMap('m').set(`a-${tag}`, { by: 'a', tag })
    a.doc.getMap('m').set('last', `a-${tag}`)
  })
  b.doc.transact(() => {
    b.doc.getText('t').insert(0, `[b ${tag}]`)
    b.doc.getMap('m').set(`b-${tag}`, { by: 'b', tag })
    b.doc.getMap('m').set('last', `b-${tag}`)
  })
}

function assertHasEdits (doc, tag, who = ['a', 'b']) {
  const text = doc.getText('t').toString()
  const m = doc.getMap('m').toJSON()
  for (const w of who) {
    assert.ok(text.includes(`[${w} ${tag}]`), `text has "[${w} ${tag}]": ${JSON.stringify(text)}`)
    assert.deepEqual(m[`${w}-${tag}`], { by: w, tag }, `map has ${w}-${tag}: ${JSON.stringify(m)}`)
  }
}

// ---------------------------------------------------------------------------------------------
// tests

test('two linked nodes replicate a room both ways between stock clients', { timeout: 90000 }, scenario(async (ctx) => {
  const B = ctx.node(await startNode(), 'B')
  const idB = await nodeId(B)
  const A = ctx.node(await startNode({ args: ['--peer', peerUrl(B)] }), 'A')
  const idA = await nodeId(A)
  assert.notEqual(idA, idB, 'two nodes with their own data directories have different ids')

  const row = await waitLinked(A, idB)
  assert.equal(row.address, peerUrl(B), `the configured peer shows its address: ${JSON.stringify(row)}`)
  await waitInbound(B, idA)

  const room = 'mesh-both-ways'
  const a = ctx.client(connect(A.wsUrl, room))
  const b = ctx.client(connect(B.wsUrl, room))
  await Promise.all([waitSynced(a.provider), waitSynced(b.provider)])

  // A → B: a Y.Text edit and a Y.Map edit made on A's client show up on B's client.
  a.doc.getText('t').insert(0, 'hello from A')
  await waitFor(() => b.doc.getText('t').toString() === 'hello from A', 15000,
    () => `A's text edit to reach B's client (B has ${JSON.stringify(b.doc.getText('t').toString())})`)
  a.doc.getMap('m').set('fromA', { n: 1, list: [1, 2, 3] })
  // (Compared without key order: a JSON value's keys may come back in another order.)
  await waitFor(() => canonicalJson(b.doc.getMap('m').get('fromA')) === canonicalJson({ n: 1, list: [1, 2, 3] }), 15000,
    () => `A's map edit to reach B's client (B has ${JSON.stringify(b.doc.getMap('m').toJSON())})`)

  // B → A.
  b.doc.getText('t').insert(b.doc.getText('t').length, ' / hello from B')
  await waitFor(() => a.doc.getText('t').toString() === 'hello from A / hello from B', 15000,
    () => `B's text edit to reach A's client (A has ${JSON.stringify(a.doc.getText('t').toString())})`)
  b.doc.getMap('m').set('fromB', 'yes')
  await waitFor(() => a.doc.getMap('m').get('fromB') === 'yes', 15000,
    () => `B's map edit to reach A's client (A has ${JSON.stringify(a.doc.getMap('m').toJSON())})`)
  await waitConverged([a, b], 15000, 'convergence after one-way edits')

  // Concurrent edits on both sides, several rounds, each round in one tick on both clients.
  for (let r = 0; r < 5; r++) editBoth(a, b, `c${r}`)
  await waitConverged([a, b], 20000, 'convergence of concurrent edits across the mesh')
  for (let r = 0; r < 5; r++) {
    assertHasEdits(a.doc, `c${r}`)
    assertHasEdits(b.doc, `c${r}`)
  }
  assert.equal(a.doc.getText('t').toString(), b.doc.getText('t').toString())
  assert.deepEqual(Y.encodeStateVector(a.doc), Y.encodeStateVector(b.doc))
  assert.ok(['a-c4', 'b-c4'].includes(a.doc.getMap('m').get('last')), 'the concurrent "last" keys resolved to one of the writes')

  // A late joiner on B gets everything, including what was written on A.
  const late = ctx.client(connect(B.wsUrl, room))
  await waitSynced(late.provider)
  await waitConverged([a, b, late], 15000, 'the late joiner on B to have everything')
  assert.ok(late.doc.getText('t').toString().includes('hello from A / hello from B'))
  assert.deepEqual(late.doc.getMap('m').get('fromA'), { n: 1, list: [1, 2, 3] })
  for (let r = 0; r < 5; r++) assertHasEdits(late.doc, `c${r}`)

  // And it can write too: the edit reaches A's client.
  late.doc.getMap('m').set('late', 'from the late joiner')
  await waitFor(() => a.doc.getMap('m').get('late') === 'from the late joiner', 15000, 'the late joiner\'s edit to reach A')
  await waitConverged([a, b, late], 15000, 'convergence after the late joiner wrote')

  // The link carried sync traffic both ways.
  const after = await configuredPeer(A)
  assert.equal(after.state, 'connected', JSON.stringify(after))
  assert.ok(after.sent.sync.messages > 0 && after.received.sync.messages > 0,
    `sync messages both ways on A's link: ${JSON.stringify({ sent: after.sent, received: after.received })}`)

  destroyAll([a, b, late])
  assert.equal(await A.stop(), 0, 'A exits 0 on SIGTERM')
  assert.equal(await B.stop(), 0, 'B exits 0 on SIGTERM')
}))

test('a room made while the peer is down reaches it when it restarts, without a client opening it', { timeout: 150000 }, scenario(async (ctx) => {
  const dirB = ctx.dir(makeDataDir())
  const B1 = ctx.node(await startNode({ dataDir: dirB }), 'B (first run)')
  const portB = B1.port
  const idB = await nodeId(B1)
  const A = ctx.node(await startNode({ args: ['--peer', peerUrl(B1)] }), 'A')
  await waitLinked(A, idB)

  // A shared room, written on A while linked, reaches B.
  const shared = 'mesh-shared-offline'
  const a = ctx.client(connect(A.wsUrl, shared))
  await waitSynced(a.provider)
  a.doc.getText('t').insert(0, 'written while linked;')
  a.doc.getMap('m').set('linked', true)
  const b1 = ctx.client(connect(B1.wsUrl, shared))
  await waitSynced(b1.provider)
  await waitConverged([a, b1], 15000, 'the shared room to reach B before it stops')
  b1.destroy()

  // B stops cleanly; A notices its peer is gone.
  B1.proc.kill('SIGTERM')
  const exit = await B1.waitExit(15000)
  assert.deepEqual(exit, { code: 0, signal: null }, 'B exits 0 on SIGTERM')
  let lastRow = null
  await waitFor(async () => {
    lastRow = await configuredPeer(A)
    return lastRow.state !== 'connected'
  }, 20000, () => `A to notice B is gone (row: ${JSON.stringify(lastRow)})`, 50)

  // While B is down: an edit of the shared room, and a new room, both on A.
  a.doc.getText('t').insert(a.doc.getText('t').length, 'written while B was down;')
  a.doc.getMap('m').set('offline', 'made while B was down')
  const fresh = 'mesh-made-while-down'
  const n = ctx.client(connect(A.wsUrl, fresh))
  await waitSynced(n.provider)
  n.doc.getText('t').insert(0, 'a room B has never seen ☕')
  n.doc.getMap('m').set('k', { nested: [1, 2, 3] })
  n.doc.getMap('m').set('s', 'value')
  const freshText = n.doc.getText('t').toString()
  const freshMap = n.doc.getMap('m').toJSON()
  const sharedExpected = () => docSnapshot(a.doc)

  // A has both before B comes back (so they travel by the manifest exchange, not live).
  await waitFor(async () => {
    const r = await roomJson(A, fresh)
    return r.status === 200 && r.body.data.t === freshText
  }, 10000, 'A to hold the new room')
  await waitFor(async () => {
    const r = await roomJson(A, shared)
    return r.status === 200 && r.body.data.m.offline === 'made while B was down'
  }, 10000, 'A to hold the offline edit')
  const stillDown = await configuredPeer(A)
  assert.notEqual(stillDown.state, 'connected', `A is not linked while B is down: ${JSON.stringify(stillDown)}`)

  // B restarts on the same data directory and port, with the same identity.
  const B2 = ctx.node(await startOn(portB, dirB), 'B (second run)')
  assert.equal(await nodeId(B2), idB, 'B keeps its node id across the restart')
  // A's supervisor redials with backoff (about 1 s, growing): allow for a few attempts.
  await waitLinked(A, idB, 60000)

  // Nobody opens the new room on B: it shows up as stored, with the content.
  let bRow = null
  const row = await waitFor(async () => {
    bRow = await storedRow(B2, fresh)
    return bRow && bRow.stored === true ? bRow : null
  }, 20000, () => `B to list "${fresh}" as stored (row: ${JSON.stringify(bRow)})`, 100)
  assert.equal(row.connections, 0, `no client has the room open on B: ${JSON.stringify(row)}`)
  assert.ok(Number.isInteger(row.bytes) && row.bytes > 0, `bytes > 0: ${JSON.stringify(row)}`)
  const doc = await roomJson(B2, fresh)
  assert.equal(doc.status, 200, JSON.stringify(doc.body))
  assert.equal(doc.body.data.t, freshText, 'B has the new room\'s text')
  assert.deepEqual(doc.body.data.m, freshMap, 'B has the new room\'s map')

  // A client of the shared room on B sees the offline edit, and everything else.
  const b2 = ctx.client(connect(B2.wsUrl, shared))
  await waitSynced(b2.provider)
  await waitFor(() => b2.doc.getMap('m').get('offline') === 'made while B was down', 20000,
    () => `the offline edit to reach B's client (B has ${docSnapshot(b2.doc)})`)
  await waitConverged([a, b2], 15000, 'the shared room after B restarted')
  assert.equal(docSnapshot(b2.doc), sharedExpected())
  assert.equal(b2.doc.getText('t').toString(), 'written while linked;written while B was down;')
  assert.equal(b2.doc.getMap('m').get('linked'), true)

  // And a client of the new room on B gets it, and the link is live again for both rooms.
  const nb = ctx.client(connect(B2.wsUrl, fresh))
  await waitSynced(nb.provider)
  await waitConverged([n, nb], 15000, 'the new room on B')
  nb.doc.getMap('m').set('back', 'from B after the restart')
  await waitFor(() => n.doc.getMap('m').get('back') === 'from B after the restart', 15000, 'an edit on B to reach A after the restart')

  destroyAll([a, n, b2, nb])
  assert.equal(await A.stop(), 0, 'A exits 0 on SIGTERM')
  assert.equal(await B2.stop(), 0, 'B exits 0 on SIGTERM')
}))

test('a peer with the wrong mesh secret waits as pending and gets no data', { timeout: 90000 }, scenario(async (ctx) => {
  const B = ctx.node(await startNode({ args: ['--mesh-secret', 'right'] }), 'B')
  const idB = await nodeId(B)
  const A = ctx.node(await startNode({ args: ['--peer', peerUrl(B), '--mesh-secret', 'wrong'] }), 'A')
  const idA = await nodeId(A)

  // Shown from the first attempt (see the regression test below); the deadline still leaves
  // room for a redial (about 1-3 s, then 1-9 s, ...).
  let last = null
  const seen = []
  const row = await waitFor(async () => {
    last = await configuredPeer(A)
    const s = `${last.state}: ${last.last_error}`
    if (seen[seen.length - 1] !== s) seen.push(s)
    return last.state === 'pending' ? last : null
  }, 45000, () => `A's peer to hold A as pending (states seen: ${JSON.stringify(seen)}; last row: ${JSON.stringify(last)})`, 50)
  // A dialed B, so it admits B; B holds A until a person approves it there.
  assert.equal(row.waiting_for, 'peer', `A waits for B's approval: ${JSON.stringify(row)}`)
  const reason = row.reason ?? row.last_error
  assert.equal(typeof reason, 'string', `the pending row carries a reason: ${JSON.stringify(row)}`)
  assert.match(reason, /secret/i, `the reason mentions the mesh secret: ${JSON.stringify(row)}`)
  assert.match(reason, /ymesh peer approve/, `the reason says how to approve: ${JSON.stringify(row)}`)

  // A room edited on A.
  const room = 'mesh-secret-private'
  const a = ctx.client(connect(A.wsUrl, room))
  await waitSynced(a.provider)
  a.doc.getText('t').insert(0, 'must not leave A')
  a.doc.getMap('m').set('secret', 'data')
  await waitFor(async () => {
    const r = await roomJson(A, room)
    return r.status === 200 && r.body.data.t === 'must not leave A'
  }, 10000, 'A to hold the room')

  // Nothing of it reaches B (listing, document API), and neither side shows a live link.
  await assertStaysAbsent(async () => {
    const r = await storedRow(B, room)
    if (r) return `B lists the room: ${JSON.stringify(r)}`
    const d = await roomJson(B, room)
    if (d.status !== 404) return `GET /rooms/${room} on B is ${d.status}: ${JSON.stringify(d.body)}`
    const pb = await peers(B)
    const live = pb.find((p) => p.state === 'connected')
    if (live) return `B shows a connected peer: ${JSON.stringify(live)}`
    const pa = await configuredPeer(A)
    if (pa.state === 'connected') return `A shows its peer connected: ${JSON.stringify(pa)}`
    return null
  }, 2500, 'no data crosses a pending link')
  const bRooms = await B.getJson('/rooms?all=true')
  assert.deepEqual(bRooms.body.data, [], `B has no rooms at all: ${JSON.stringify(bRooms.body)}`)
  const pb = await peers(B)
  assert.ok(!pb.some((p) => p.node_id === idA && p.state === 'connected'), `B never linked A: ${JSON.stringify(pb)}`)
  assert.notEqual(idA, idB)

  a.destroy()
  assert.equal(await A.stop(), 0)
  assert.equal(await B.stop(), 0)
}))

// Regression test for a handshake race: the dialer's first attempt must be reported with the
// peer's answer (here: held as pending because the secrets differ), not as "connection closed
// during the handshake" (docs/mesh-protocol.md, "Admission").
test('the first attempt is shown with the peer\'s answer and its reason', {
  timeout: 60000
}, scenario(async (ctx) => {
  const outcomes = []
  for (let i = 0; i < 6; i++) {
    const B = ctx.node(await startNode({ args: ['--mesh-secret', 'right'] }), `B${i}`)
    const A = ctx.node(await startNode({ args: ['--peer', peerUrl(B), '--mesh-secret', 'wrong'] }), `A${i}`)
    // The first outcome of the first dial (the next dial is at least 1 s later).
    const row = await waitFor(async () => {
      const r = await configuredPeer(A)
      return r.state === 'pending' || r.state === 'refused' || r.state === 'backing_off' ? r : null
    }, 15000, 'the first dial to be answered', 10)
    outcomes.push(`${row.state}: ${row.reason ?? row.last_error}`)
    await A.stop()
    await B.stop()
  }
  assert.ok(outcomes.every((o) => o.startsWith('pending:') && /secret/i.test(o)),
    `every first attempt is shown as pending with the reason: ${JSON.stringify(outcomes, null, 1)}`)
}))
