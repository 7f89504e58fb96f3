// clients/js/ymesh-commands.mjs on stock y-websocket providers, against a fake node written
// here with `ws` + y-protocols (no ymesh binary needed):
//   node --test test/commands-client.test.mjs
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { WebSocketServer } from 'ws'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import { Y, connect, waitSynced, waitFor } from '../lib/node.mjs'
import { commands } from '../lib/clients-js.mjs'

const {
  attachCommands, CommandDedup, outcome, encodeCommandFrame, decodeCommandFrame,
  encodeResultFrame, invalidateHandler, compactHandler, migrateHandler, reindexHandler
} = commands

/** A y-websocket server that syncs one doc per node and records 103 results per connection. */
class FakeNode {
  static async start () {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    await once(wss, 'listening')
    return new FakeNode(wss)
  }

  constructor (wss) {
    this.wss = wss
    this.doc = new Y.Doc()
    /** @type {Array<{ ws: import('ws').WebSocket, url: string, results: any[] }>} */
    this.conns = []
    this.results = []
    wss.on('connection', (ws, req) => {
      const conn = { ws, url: req.url, results: [] }
      this.conns.push(conn)
      ws.on('message', (data) => {
        const decoder = decoding.createDecoder(new Uint8Array(data))
        const type = decoding.readVarUint(decoder)
        if (type === 0) {
          const encoder = encoding.createEncoder()
          encoding.writeVarUint(encoder, 0)
          syncProtocol.readSyncMessage(decoder, encoder, this.doc, conn)
          if (encoding.length(encoder) > 1) ws.send(encoding.toUint8Array(encoder))
        } else if (type === 103) {
          const frame = decodeCommandFrame(new Uint8Array(data))
          assert.equal(frame.subtype, 1, 'clients send results only')
          const result = JSON.parse(frame.json)
          conn.results.push(result)
          this.results.push(result)
        }
      })
      const encoder = encoding.createEncoder()
      encoding.writeVarUint(encoder, 0)
      syncProtocol.writeSyncStep1(encoder, this.doc)
      ws.send(encoding.toUint8Array(encoder))
    })
  }

  get url () { return `ws://127.0.0.1:${this.wss.address().port}/rooms` }

  /** The newest connection. */
  get conn () { return this.conns[this.conns.length - 1] }

  send (frame, conn = this.conn) { conn.ws.send(frame) }

  /** Waits for the `n`-th result (1-based) over all connections and returns it. */
  async result (n) {
    await waitFor(() => this.results.length >= n, 5000, () => `result #${n} (have ${JSON.stringify(this.results)})`)
    return this.results[n - 1]
  }

  close () {
    for (const ws of this.wss.clients) ws.terminate()
    this.wss.close()
  }
}

let seq = 0
const command = (id, kind, args = {}) => ({
  id,
  kind,
  room: 'notes',
  args,
  origin: 'fake-node',
  boot: 'b',
  seq: ++seq,
  issued_ms: Date.now(),
  deadline_ms: Date.now() + 30000,
  hops: 0
})
const frame = (id, kind, args) => encodeCommandFrame(command(id, kind, args))

/** Runs `fn(track)`, then destroys every tracked provider and node. */
const it = (name, fn) => test(name, { timeout: 30000 }, async () => {
  const things = []
  try {
    await fn((x) => { things.push(x); return x })
  } finally {
    for (const x of things.reverse()) {
      try { x.destroy ? x.destroy() : x.close() } catch {}
    }
  }
})

const optedIn = (node, doc) => connect(node.url, 'notes', { doc, params: { commands: '1' } })

it('frames are [103, subtype, varString(json)]', async () => {
  const result = { id: 'n1-b1-1', responder: '42', responder_kind: 'client', room: 'notes', status: 'ok', detail: null, at_ms: 1500 }
  const bytes = encodeResultFrame(result)
  // The result example of docs/protocol.md section 5.2.
  assert.equal(Buffer.from(bytes.subarray(0, 3)).toString('hex'), '670173')
  assert.equal(Buffer.from(bytes.subarray(3)).toString(), '{"id":"n1-b1-1","responder":"42","responder_kind":"client","room":"notes","status":"ok","detail":null,"at_ms":1500}')
  assert.deepEqual(decodeCommandFrame(bytes), { subtype: 1, json: JSON.stringify(result) })
  assert.equal(decodeCommandFrame(new Uint8Array([0, 0, 0])), null)
})

it('a command arriving on two providers that share a dedup runs once and is answered once', async (track) => {
  const a = track(await FakeNode.start())
  const b = track(await FakeNode.start())
  const doc = new Y.Doc()
  const pa = track(optedIn(a, doc))
  const pb = track(optedIn(b, doc))
  const dedup = new CommandDedup()
  let calls = 0
  const handlers = {
    compact: async (cmd, { doc: d, provider }) => {
      calls++
      assert.equal(d, doc)
      assert.ok(provider === pa.provider || provider === pb.provider)
      await new Promise((resolve) => setImmediate(resolve))
      return { compacted: cmd.id }
    }
  }
  const seen = []
  const onResult = (result, { command }) => seen.push([result.id, command.kind])
  attachCommands(pa.provider, handlers, { dedup, onResult })
  attachCommands(pb.provider, handlers, { dedup, onResult })
  await Promise.all([waitSynced(pa.provider), waitSynced(pb.provider)])
  assert.equal(a.conn.url, '/rooms/notes?commands=1')
  assert.equal(b.conn.url, '/rooms/notes?commands=1')

  a.send(frame('c1', 'compact'))
  a.send(frame('c1', 'compact')) // the same link twice, too
  b.send(frame('c1', 'compact'))
  const first = await a.result(1)
  const { at_ms: at, ...rest } = first
  assert.deepEqual(rest, {
    id: 'c1', responder: String(doc.clientID), responder_kind: 'client', room: 'notes', status: 'ok', detail: { compacted: 'c1' }
  })
  assert.ok(Math.abs(at - Date.now()) < 10000)

  // B's next result is for c2: c1 was neither run nor answered again on B.
  b.send(frame('c2', 'compact'))
  const second = await b.result(1)
  assert.equal(second.id, 'c2')
  assert.equal(second.status, 'ok')
  assert.equal(calls, 2)
  assert.deepEqual(seen, [['c1', 'compact'], ['c2', 'compact']])
  assert.equal(a.results.length, 1)
})

it('unknown kinds are answered unsupported; throws, refusals and malformed commands', async (track) => {
  const node = track(await FakeNode.start())
  const p = track(optedIn(node))
  const warnings = []
  const log = { warn: (m) => warnings.push(m) }
  attachCommands(p.provider, {
    reindex: () => { throw new Error('index store is read-only') },
    compact: () => outcome.refused('on battery'),
    migrate: async () => undefined,
    toString: 'not a handler'
  }, { log })
  await waitSynced(p.provider)

  node.send(frame('u1', 'defragment'))
  assert.deepEqual([(await node.result(1)).status, node.results[0].detail], ['unsupported', 'command kind "defragment" is not supported'])
  node.send(frame('u2', 'invalidate')) // known to ymesh, no handler here
  assert.equal((await node.result(2)).status, 'unsupported')
  node.send(frame('u3', 'toString')) // not an own function of `handlers`
  assert.equal((await node.result(3)).status, 'unsupported')

  const bad = (json) => {
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, 103)
    encoding.writeVarUint(encoder, 0)
    encoding.writeVarString(encoder, json)
    return encoding.toUint8Array(encoder)
  }
  node.send(bad('{not json'))
  node.send(bad('{"kind":"compact"}'))
  node.send(encodeResultFrame({ id: 'x', status: 'ok' })) // a result sent to a client: ignored
  node.send(new Uint8Array([103, 7, 2, 123, 125])) // an unknown subtype: ignored
  node.send(frame('e1', 'reindex'))
  assert.deepEqual([(await node.result(4)).id, node.results[3].status, node.results[3].detail], ['e1', 'error', 'index store is read-only'])
  node.send(frame('r1', 'compact'))
  assert.deepEqual([(await node.result(5)).status, node.results[4].detail], ['refused', 'on battery'])
  node.send(frame('m1', 'migrate'))
  assert.deepEqual([(await node.result(6)).status, node.results[5].detail], ['ok', null])

  assert.deepEqual(node.results.map((r) => r.id), ['u1', 'u2', 'u3', 'e1', 'r1', 'm1'])
  assert.equal(warnings.length, 2, warnings.join('\n'))
  assert.match(warnings[0], /malformed command/)
  assert.match(warnings[1], /without a string id/)
  assert.equal(node.conns.length, 1, 'the provider never reconnected')
  assert.ok(p.provider.wsconnected)

  // A provider that did not opt in gets a warning.
  const plain = track(connect(node.url, 'notes'))
  const warned = []
  const detach = attachCommands(plain.provider, {}, { log: { warn: (m) => warned.push(m) } })
  assert.match(warned[0], /commands: '1'/)
  detach()
  assert.equal(plain.provider.messageHandlers[103], undefined)
})

/** Stands in for y-indexeddb: stores the doc's state on creation, clearData() empties it. */
class FakePersistence {
  constructor (doc) {
    this.entries = [Y.encodeStateAsUpdate(doc)]
    this.cleared = false
    this.whenSynced = Promise.resolve(this)
  }

  async clearData () {
    this.entries = []
    this.cleared = true
  }
}

it('example handlers: migrate, reindex, compact, invalidate', async (track) => {
  const node = track(await FakeNode.start())
  const doc = new Y.Doc()
  const p = track(optedIn(node, doc))
  const store = { persistence: new FakePersistence(doc), createPersistence: (d) => new FakePersistence(d) }
  const original = store.persistence
  let indexed = 0
  attachCommands(p.provider, {
    migrate: migrateHandler({
      1: (d) => d.getMap('todos').set('v1', true),
      2: (d) => d.getMap('todos').set('v2', true)
    }),
    reindex: reindexHandler(async (d) => { indexed = d.getMap('todos').size; return indexed }),
    compact: compactHandler(store),
    invalidate: invalidateHandler(store)
  })
  await waitSynced(p.provider)

  node.send(frame('m1', 'migrate', { version: 2 }))
  assert.deepEqual((await node.result(1)).detail, { from: 0, to: 2, applied: [1, 2] })
  assert.equal(doc.getMap('meta').get('schema_version'), 2)
  // The migration is a normal document change: it reaches the node.
  await waitFor(() => node.doc.getMap('meta').get('schema_version') === 2, 5000, 'the migration on the node')
  assert.deepEqual(node.doc.getMap('todos').toJSON(), { v1: true, v2: true })
  node.send(frame('m2', 'migrate', { version: 2 }))
  assert.deepEqual((await node.result(2)).detail, { from: 2, to: 2, applied: [] })
  node.send(frame('m3', 'migrate', { version: 4 }))
  assert.deepEqual([(await node.result(3)).status, node.results[2].detail], ['error', 'no migration to version 3'])
  node.send(frame('m4', 'migrate', {}))
  assert.equal((await node.result(4)).status, 'error')

  node.send(frame('x1', 'reindex'))
  assert.deepEqual((await node.result(5)).detail, { indexed: 2 })
  assert.equal(indexed, 2)

  node.send(frame('k1', 'compact'))
  const compacted = await node.result(6)
  assert.equal(compacted.status, 'ok')
  assert.equal(compacted.detail.bytes, Y.encodeStateAsUpdate(doc).byteLength)
  assert.ok(original.cleared)
  assert.notEqual(store.persistence, original)
  assert.equal(store.persistence.entries.length, 1)

  // invalidate clears the cache and reconnects; the result comes on the new connection.
  const beforeInvalidate = store.persistence
  node.send(frame('i1', 'invalidate'))
  const invalidated = await node.result(7)
  assert.deepEqual([invalidated.status, invalidated.detail], ['ok', { cleared: true, reconnected: true }])
  assert.ok(beforeInvalidate.cleared)
  assert.equal(node.conns.length, 2)
  assert.deepEqual(node.conns[1].results.map((r) => r.id), ['i1'])
  await waitSynced(p.provider)
  // Commands seen before the reconnect stay deduplicated.
  node.send(frame('i1', 'invalidate'))
  node.send(frame('x2', 'reindex'))
  assert.equal((await node.result(8)).id, 'x2')
})
