// Durability across restarts: the node is stopped (SIGTERM) or killed (SIGKILL) mid-run and
// started again on the same port and data directory; stock clients reconnect by themselves.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import * as crypto from 'node:crypto'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import {
  Y, startNode, connect, waitSynced, waitFor, withTimeout, docSnapshot, rawSocket, syncStep1Frame,
  frameKind, destroyAll, makeDataDir, removeDataDir, ymeshBin, MSG_SYNC
} from '../lib/node.mjs'

const MSG_SYNC_STATUS = 102

// ---------------------------------------------------------------------------------------------
// helpers

/**
 * Runs `fn(ctx)` with everything it starts cleaned up whatever happens: clients, raw sockets,
 * nodes (SIGKILLed if still running) and data directories. A failure carries the log tails.
 */
function scenario (fn) {
  return async () => {
    const ctx = {
      nodes: [],
      clients: [],
      sockets: [],
      dirs: [],
      node (n) { ctx.nodes.push(n); return n },
      client (c) { ctx.clients.push(c); return c },
      socket (s) { ctx.sockets.push(s); return s },
      dir (d) { ctx.dirs.push(d); return d }
    }
    try {
      await fn(ctx)
    } catch (e) {
      const tails = ctx.nodes.map((n, i) =>
        `--- node ${i} (port ${n.port}, pid ${n.proc.pid}, exit ${JSON.stringify(n.exited())}) log tail ---\n${n.logsTail(60)}`)
      if (e && typeof e.message === 'string' && tails.length) e.message += '\n' + tails.join('\n')
      throw e
    } finally {
      destroyAll(ctx.clients)
      for (const s of ctx.sockets) s.terminate()
      for (const n of ctx.nodes) await n.kill()
      for (const d of ctx.dirs) removeDataDir(d)
    }
  }
}

/**
 * Starts a node on `port` (and `dataDir`), retrying for a bounded time while the port is still
 * reported in use (it was just released by the previous node on it).
 */
async function startOn (port, dataDir, ms = 15000) {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      const n = await startNode({ port, dataDir })
      assert.equal(n.port, port, 'the restarted node listens on the same port')
      return n
    } catch (e) {
      if (!/in use|EADDRINUSE/i.test(e.message) || Date.now() >= deadline) throw e
      const retryAt = Date.now() + 100 // bounded by `deadline`
      await waitFor(() => Date.now() >= retryAt, 1000, 'the retry delay')
    }
  }
}

/** `[102, varUint8Array(payload)]`. */
function syncStatusFrame (payload) {
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, MSG_SYNC_STATUS)
  encoding.writeVarUint8Array(enc, payload)
  return encoding.toUint8Array(enc)
}

/** `[0, 2, varUint8Array(update)]`. */
function updateFrame (update) {
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, MSG_SYNC)
  encoding.writeVarUint(enc, 2)
  encoding.writeVarUint8Array(enc, update)
  return encoding.toUint8Array(enc)
}

const hex = (u8) => Buffer.from(u8).toString('hex')

/**
 * Makes a stock provider understand SYNC_STATUS (102) echoes (through its per-instance
 * `messageHandlers`) and returns `saved()`: sends a 102 with a random payload on the provider's
 * current socket and resolves once the node echoes it, i.e. once every update this client sent
 * on that socket before it is on disk.
 */
function durabilityProbe (client) {
  const echoes = []
  client.provider.messageHandlers[MSG_SYNC_STATUS] = (_encoder, decoder) => {
    echoes.push(hex(decoding.readVarUint8Array(decoder)))
  }
  return {
    echoes,
    async saved (ms = 10000) {
      const { provider } = client
      assert.ok(provider.wsconnected && provider.ws, 'the provider is connected when asking for a 102 echo')
      const payload = crypto.randomBytes(8)
      provider.ws.send(syncStatusFrame(payload))
      await waitFor(() => echoes.includes(hex(payload)), ms,
        `the 102 echo for client ${client.doc.clientID} (echoes so far: ${echoes.length})`)
    }
  }
}

const sameState = (a, b) => docSnapshot(a) === docSnapshot(b) &&
  Buffer.compare(Buffer.from(Y.encodeStateVector(a)), Buffer.from(Y.encodeStateVector(b))) === 0

const svOf = (doc) => Object.fromEntries(Y.decodeStateVector(Y.encodeStateVector(doc)))

async function waitConverged (clients, ms, what) {
  await waitFor(() => clients.every((c) => sameState(c.doc, clients[0].doc)), ms,
    () => `${what}: ` + clients.map((c) => docSnapshot(c.doc)).join(' | '))
}

/** Waits until every provider is connected and synced again (after a node came back). */
async function waitReconnected (clients, ms = 20000) {
  await waitFor(() => clients.every((c) => c.provider.wsconnected && c.provider.synced), ms,
    () => 'the providers to reconnect and sync: ' + clients.map((c) =>
      `{connected: ${c.provider.wsconnected}, synced: ${c.provider.synced}, failed attempts: ${c.provider.wsUnsuccessfulReconnects}}`).join(' '))
}

/** Waits until every provider noticed its socket is gone. */
async function waitDisconnected (clients, ms = 10000) {
  await waitFor(() => clients.every((c) => !c.provider.wsconnected), ms, 'the providers to notice the node is gone')
}

/** The row of GET /rooms?all=true for `room` (or undefined). */
async function storedRow (node, room) {
  const { status, body } = await node.getJson('/rooms?all=true')
  assert.equal(status, 200, `GET /rooms?all=true: ${JSON.stringify(body)}`)
  assert.ok(Array.isArray(body.data), `GET /rooms?all=true data is an array: ${JSON.stringify(body)}`)
  return body.data.find((r) => r.name === room)
}

async function loadedNames (node) {
  const { status, body } = await node.getJson('/rooms')
  assert.equal(status, 200, `GET /rooms: ${JSON.stringify(body)}`)
  assert.ok(Array.isArray(body.data), `GET /rooms data is an array: ${JSON.stringify(body)}`)
  return body.data.map((r) => r.name)
}

/** Writes, into `a` and `b`, interleaved Y.Text and Y.Map edits tagged with `tag`. */
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

/** Spawns `ymesh ...args` and resolves {code, signal, output, ms} once it exits (bounded). */
async function runYmesh (args, { cwd, env = {}, ms = 10000 } = {}) {
  const t0 = Date.now()
  const proc = spawn(ymeshBin, args, {
    cwd,
    env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  proc.stdout.on('data', (d) => { output += d.toString('utf8') })
  proc.stderr.on('data', (d) => { output += d.toString('utf8') })
  const exit = new Promise((resolve, reject) => {
    proc.on('error', reject)
    proc.on('close', (code, signal) => resolve({ code, signal }))
  })
  try {
    const { code, signal } = await withTimeout(exit, ms, `ymesh ${args.join(' ')} to exit`)
    return { code, signal, output, ms: Date.now() - t0 }
  } catch (e) {
    try { proc.kill('SIGKILL') } catch {}
    await withTimeout(exit, 5000, 'the killed ymesh to exit').catch(() => {})
    e.message += `\n--- its output ---\n${output}`
    throw e
  }
}

// ---------------------------------------------------------------------------------------------
// tests

test('the interop suite survives a node restarted mid-run', { timeout: 90000 }, scenario(async (ctx) => {
  const dataDir = ctx.dir(makeDataDir())
  const node1 = ctx.node(await startNode({ dataDir }))
  const port = node1.port
  const room = 'restart-sigterm'
  const soloRoom = 'restart-sigterm-solo'

  const a = ctx.client(connect(node1.wsUrl, room))
  const b = ctx.client(connect(node1.wsUrl, room))
  await Promise.all([waitSynced(a.provider), waitSynced(b.provider)])
  for (let r = 0; r < 3; r++) editBoth(a, b, `before-${r}`)
  await waitConverged([a, b], 15000, 'convergence before the restart')
  for (let r = 0; r < 3; r++) assertHasEdits(a.doc, `before-${r}`)
  const beforeSnapshot = docSnapshot(a.doc)
  const beforeSv = svOf(a.doc)

  // A room nobody holds across the restart: only the node's data directory can bring it back.
  const w = ctx.client(connect(node1.wsUrl, soloRoom))
  await waitSynced(w.provider)
  w.doc.getText('t').insert(0, 'solo content')
  w.doc.getMap('m').set('solo', true)
  const soloExpected = docSnapshot(w.doc)
  const r = ctx.client(connect(node1.wsUrl, soloRoom))
  await waitSynced(r.provider)
  await waitFor(() => docSnapshot(r.doc) === soloExpected, 10000, 'the solo room to reach a reader (so the node has it)')
  w.destroy()
  r.destroy()

  node1.proc.kill('SIGTERM')
  const exit = await node1.waitExit(15000)
  assert.deepEqual(exit, { code: 0, signal: null }, 'the node exits 0 on SIGTERM')
  await waitDisconnected([a, b])

  // An edit made while the node is down travels on reconnect.
  a.doc.getMap('m').set('offline', 'made while the node was down')

  const node2 = ctx.node(await startOn(port, dataDir))
  await waitReconnected([a, b])
  await waitConverged([a, b], 15000, 'convergence after the restart')
  assert.equal(b.doc.getMap('m').get('offline'), 'made while the node was down')
  for (let i = 0; i < 3; i++) assertHasEdits(b.doc, `before-${i}`)

  // A late joiner gets everything written before the restart (and the offline edit).
  const c = ctx.client(connect(node2.wsUrl, room))
  await waitSynced(c.provider)
  for (let i = 0; i < 3; i++) assertHasEdits(c.doc, `before-${i}`)
  for (const [client, clock] of Object.entries(beforeSv)) {
    assert.ok((svOf(c.doc)[client] ?? 0) >= clock, `late joiner has client ${client} up to clock ${clock}`)
  }
  await waitConverged([a, b, c], 10000, 'late joiner convergence')
  assert.notEqual(docSnapshot(c.doc), beforeSnapshot, 'the offline edit is included as well')

  // The room nobody held came back from disk.
  const s = ctx.client(connect(node2.wsUrl, soloRoom))
  await waitSynced(s.provider)
  assert.equal(docSnapshot(s.doc), soloExpected, 'the solo room survives the restart')

  // Edits after the restart reach everybody.
  editBoth(a, b, 'after')
  c.doc.getText('t').insert(0, '[c after]')
  await waitConverged([a, b, c], 15000, 'convergence of edits made after the restart')
  for (const x of [a, b, c]) {
    assertHasEdits(x.doc, 'after')
    assert.ok(x.doc.getText('t').toString().includes('[c after]'))
  }

  assert.equal(await node2.stop(), 0, 'the restarted node exits 0 too')
}))

test('a node SIGKILLed after its content is durable restarts with all of it', { timeout: 90000 }, scenario(async (ctx) => {
  const dataDir = ctx.dir(makeDataDir())
  const node1 = ctx.node(await startNode({ dataDir }))
  const port = node1.port
  const room = 'restart-sigkill'

  const a = ctx.client(connect(node1.wsUrl, room))
  const b = ctx.client(connect(node1.wsUrl, room))
  const probeA = durabilityProbe(a)
  const probeB = durabilityProbe(b)
  await Promise.all([waitSynced(a.provider), waitSynced(b.provider)])
  for (let r = 0; r < 3; r++) editBoth(a, b, `before-${r}`)
  await waitConverged([a, b], 15000, 'convergence before the kill')

  // Each stock client asks, on its own socket, for a 102 echo: its updates are then on disk.
  await Promise.all([probeA.saved(), probeB.saved()])

  // And a raw socket writes an update of its own, then waits for its 102 echo.
  const raw = ctx.socket(rawSocket(`${node1.wsUrl}/${room}`))
  await raw.waitOpen()
  raw.send(syncStep1Frame())
  const step2 = await raw.waitMessage((m) => frameKind(m)[0] === 0 && frameKind(m)[1] === 1, 5000, 0, 'SyncStep2')
  const src = new Y.Doc()
  src.clientID = 0x5EED
  {
    const d = decoding.createDecoder(step2)
    decoding.readVarUint(d)
    decoding.readVarUint(d)
    Y.applyUpdate(src, decoding.readVarUint8Array(d))
  }
  const svBefore = Y.encodeStateVector(src)
  src.transact(() => {
    src.getText('t').insert(0, '[raw]')
    src.getMap('m').set('raw', 'durable before SIGKILL')
  })
  raw.send(updateFrame(Y.encodeStateAsUpdate(src, svBefore)))
  const payload = crypto.randomBytes(8)
  const mark = raw.messages.length
  raw.send(syncStatusFrame(payload))
  const echo = await raw.waitMessage((m) => m[0] === MSG_SYNC_STATUS, 10000, mark, 'the 102 echo on the raw socket')
  {
    const d = decoding.createDecoder(echo)
    decoding.readVarUint(d)
    assert.equal(hex(decoding.readVarUint8Array(d)), hex(payload), 'the 102 echo carries our payload')
  }
  src.destroy()
  await waitFor(() => [a, b].every((c) => c.doc.getMap('m').get('raw') === 'durable before SIGKILL'), 10000,
    'the raw edit to reach both clients')
  await waitConverged([a, b], 10000, 'convergence with the raw edit')
  assert.ok(a.doc.getText('t').toString().includes('[raw]'))

  // The listing agrees that the room is stored.
  const row = await waitFor(async () => {
    const x = await storedRow(node1, room)
    return x && x.stored === true && x.bytes > 0 ? x : null
  }, 10000, `GET /rooms?all=true to list "${room}" as stored`)
  assert.equal(row.loaded, true)

  const expected = docSnapshot(a.doc)
  const expectedSv = svOf(a.doc)

  node1.proc.kill('SIGKILL')
  const exit = await node1.waitExit(10000)
  assert.equal(exit.signal, 'SIGKILL')
  await waitDisconnected([a, b])

  // First, check what is on disk with a node the stock clients cannot reach (another port),
  // so nothing they resend on reconnect can fill a gap.
  const check = ctx.node(await startNode({ dataDir }))
  assert.notEqual(check.port, port)
  const doc = await check.getJson(`/rooms/${room}?format=json`)
  assert.equal(doc.status, 200, JSON.stringify(doc.body))
  assert.equal(doc.body.data.t, a.doc.getText('t').toString(), 'the stored text is complete')
  assert.deepEqual(doc.body.data.m, a.doc.getMap('m').toJSON(), 'the stored map is complete')
  const late = ctx.client(connect(check.wsUrl, room))
  await waitSynced(late.provider)
  assert.equal(docSnapshot(late.doc), expected, 'a late joiner gets exactly the pre-kill content')
  assert.deepEqual(svOf(late.doc), expectedSv, 'and the same state vector')
  late.destroy()
  assert.equal(await check.stop(), 0)

  // Then back on the original port: the stock clients reconnect by themselves.
  const node2 = ctx.node(await startOn(port, dataDir))
  await waitReconnected([a, b])
  await waitConverged([a, b], 15000, 'convergence after the restart')
  assert.equal(docSnapshot(a.doc), expected, 'nothing was lost or invented')
  const c = ctx.client(connect(node2.wsUrl, room))
  await waitSynced(c.provider)
  assert.equal(docSnapshot(c.doc), expected, 'a late joiner after the restart gets the pre-kill content')

  editBoth(a, b, 'after')
  await waitConverged([a, b, c], 15000, 'convergence of edits made after the restart')
  for (const x of [a, b, c]) assertHasEdits(x.doc, 'after')
  // The probes still work on the new sockets.
  await Promise.all([probeA.saved(), probeB.saved()])

  assert.equal(await node2.stop(), 0)
}))

test('a second node on the same data directory refuses to start; the first keeps serving', { timeout: 60000 }, scenario(async (ctx) => {
  const dataDir = ctx.dir(makeDataDir())
  const node1 = ctx.node(await startNode({ dataDir }))
  const room = 'locked-dir'
  const a = ctx.client(connect(node1.wsUrl, room))
  const probe = durabilityProbe(a)
  await waitSynced(a.provider)
  a.doc.getText('t').insert(0, 'first node;')
  await probe.saved()

  // Through the environment (cwd = the directory) and through --data-dir.
  const attempts = [
    { args: ['serve', '--host', '127.0.0.1', '--port', '0'], opts: { cwd: dataDir, env: { YMESH_DATA_DIR: dataDir } } },
    { args: ['serve', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir], opts: { cwd: makeDataDir() } }
  ]
  ctx.dir(attempts[1].opts.cwd)
  for (const { args, opts } of attempts) {
    const res = await runYmesh(args, { ...opts, ms: 10000 })
    const how = `ymesh ${args.join(' ')} (${JSON.stringify({ code: res.code, signal: res.signal, ms: res.ms })}):\n${res.output}`
    assert.equal(res.signal, null, how)
    assert.notEqual(res.code, 0, how)
    assert.ok(res.ms < 5000, `it gives up quickly: ${how}`)
    assert.match(res.output, /lock/i, how)
    assert.ok(res.output.includes(dataDir), `the message names the directory: ${how}`)
    assert.doesNotMatch(res.output, /listening on/, how)
  }

  // The first node is untouched: still running, serving HTTP and WebSocket, still saving.
  assert.equal(node1.exited(), null, 'the first node is still running')
  const h = await node1.getJson('/healthz')
  assert.equal(h.status, 200)
  a.doc.getText('t').insert(a.doc.getText('t').length, 'after the refused start;')
  await probe.saved()
  const b = ctx.client(connect(node1.wsUrl, room))
  await waitSynced(b.provider)
  await waitFor(() => b.doc.getText('t').toString() === 'first node;after the refused start;', 10000,
    () => `a new client to get the content (has ${JSON.stringify(b.doc.getText('t').toString())})`)
  b.doc.getMap('m').set('b', 1)
  await waitFor(() => a.doc.getMap('m').get('b') === 1, 10000, 'edits to keep flowing')

  // And its directory is intact: a restart on it has everything.
  const expected = docSnapshot(a.doc)
  destroyAll([a, b])
  assert.equal(await node1.stop(), 0)
  const node2 = ctx.node(await startNode({ dataDir }))
  const c = ctx.client(connect(node2.wsUrl, room))
  await waitSynced(c.provider)
  assert.equal(docSnapshot(c.doc), expected)
  assert.equal(await node2.stop(), 0)
}))

test('GET /rooms?all=true lists stored rooms after a restart before they are opened', { timeout: 60000 }, scenario(async (ctx) => {
  const dataDir = ctx.dir(makeDataDir())
  const t0 = Date.now()
  const node1 = ctx.node(await startNode({ dataDir }))
  const room = 'stored café/ü'
  const urlRoom = encodeURIComponent(room)
  const w = ctx.client(connect(node1.wsUrl, urlRoom))
  const probe = durabilityProbe(w)
  await waitSynced(w.provider)
  w.doc.getText('t').insert(0, 'stored text ☕')
  w.doc.getMap('m').set('k', { nested: [1, 2, 3] })
  w.doc.getMap('m').set('s', 'value')
  await probe.saved()
  const expectedText = w.doc.getText('t').toString()
  const expectedMap = w.doc.getMap('m').toJSON()
  const expectedUpdate = Y.encodeStateAsUpdate(w.doc)
  w.destroy()
  assert.equal(await node1.stop(), 0)
  const t1 = Date.now()

  const node2 = ctx.node(await startNode({ dataDir }))
  // Listed as stored, not loaded, before anybody opens it.
  const row = await storedRow(node2, room)
  assert.ok(row, `GET /rooms?all=true lists ${JSON.stringify(room)}`)
  assert.equal(row.stored, true, JSON.stringify(row))
  assert.equal(row.loaded, false, JSON.stringify(row))
  assert.equal(row.connections, 0, JSON.stringify(row))
  assert.ok(Number.isInteger(row.bytes) && row.bytes > 0, `bytes > 0: ${JSON.stringify(row)}`)
  assert.ok(Number.isInteger(row.updated_at_ms), JSON.stringify(row))
  assert.ok(row.updated_at_ms >= t0 - 2000 && row.updated_at_ms <= t1 + 2000,
    `updated_at_ms ${row.updated_at_ms} within the write window [${t0}, ${t1}] (now ${Date.now()})`)
  assert.ok(!(await loadedNames(node2)).includes(room), 'GET /rooms does not list a room nobody opened')

  // A room that never existed is 404 and stays absent.
  const missing = await node2.getJson('/rooms/never-written?format=json')
  assert.equal(missing.status, 404, JSON.stringify(missing.body))
  assert.ok(!(await storedRow(node2, 'never-written')), 'looking does not create a room')

  // The document API loads the stored room and shows its content.
  const doc = await node2.getJson(`/rooms/${urlRoom}?format=json`)
  assert.equal(doc.status, 200, JSON.stringify(doc.body))
  assert.equal(doc.body.data.t, expectedText)
  assert.deepEqual(doc.body.data.m, expectedMap)
  const bin = await fetch(`${node2.url}/rooms/${urlRoom}`, { signal: AbortSignal.timeout(10000) })
  assert.equal(bin.status, 200)
  const fromBin = new Y.Doc()
  Y.applyUpdate(fromBin, new Uint8Array(await bin.arrayBuffer()))
  const fromWriter = new Y.Doc()
  Y.applyUpdate(fromWriter, expectedUpdate)
  assert.ok(sameState(fromBin, fromWriter), 'the binary document equals what was written')
  fromBin.destroy()
  fromWriter.destroy()

  // Now it is in memory: listed by GET /rooms, and as loaded + stored by ?all=true.
  assert.ok((await loadedNames(node2)).includes(room), 'GET /rooms lists the room once it is opened')
  const after = await storedRow(node2, room)
  assert.equal(after.loaded, true, JSON.stringify(after))
  assert.equal(after.stored, true, JSON.stringify(after))
  assert.equal(after.bytes, row.bytes, 'reading does not change the stored size')

  // And a WebSocket client opening it gets the content.
  const c = ctx.client(connect(node2.wsUrl, urlRoom))
  await waitSynced(c.provider)
  assert.equal(c.doc.getText('t').toString(), expectedText)
  assert.deepEqual(c.doc.getMap('m').toJSON(), expectedMap)
  assert.equal(await node2.stop(), 0)
}))
