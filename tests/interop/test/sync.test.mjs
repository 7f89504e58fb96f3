// Document sync between stock y-websocket v3 clients through one ymesh node.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import {
  Y, startNode, connect, waitSynced, waitFor, withCleanup, docSnapshot, rawSocket, syncStep1Frame,
  awarenessFrame, decodeAwarenessFrame, frameKind
} from '../lib/node.mjs'

let node
before(async () => { node = await startNode() })
after(async () => { if (node) await node.stop() })

const it = (name, opts, fn) => test(name, opts, withCleanup(() => [node], fn))

const sameState = (a, b) => docSnapshot(a) === docSnapshot(b) &&
  Buffer.compare(Buffer.from(Y.encodeStateVector(a)), Buffer.from(Y.encodeStateVector(b))) === 0

it('two clients converge on concurrent Y.Map and Y.Text edits', { timeout: 30000 }, async (track) => {
  const a = track(connect(node.wsUrl, 'converge'))
  const b = track(connect(node.wsUrl, 'converge'))
  await Promise.all([waitSynced(a.provider), waitSynced(b.provider)])

  // Both edit in the same tick, before either can see the other's change: truly concurrent.
  a.doc.transact(() => {
    a.doc.getText('t').insert(0, 'alpha ')
    a.doc.getMap('m').set('shared', 'from-a')
    a.doc.getMap('m').set('a', 1)
  })
  b.doc.transact(() => {
    b.doc.getText('t').insert(0, 'beta ')
    b.doc.getMap('m').set('shared', 'from-b')
    b.doc.getMap('m').set('b', 2)
  })
  // A few more interleaved rounds, some at the same positions.
  for (let r = 0; r < 5; r++) {
    a.doc.getText('t').insert(0, `a${r}`)
    b.doc.getText('t').insert(0, `b${r}`)
    a.doc.getMap('m').set('round', `a${r}`)
    b.doc.getMap('m').set('round', `b${r}`)
  }
  const expectedLen = 'alpha '.length + 'beta '.length + 10 * 2
  await waitFor(() => sameState(a.doc, b.doc) && a.doc.getText('t').length === expectedLen,
    15000, () => `convergence: a=${docSnapshot(a.doc)} b=${docSnapshot(b.doc)}`)

  const m = a.doc.getMap('m').toJSON()
  assert.equal(m.a, 1)
  assert.equal(m.b, 2)
  assert.ok(['from-a', 'from-b'].includes(m.shared))
  const text = a.doc.getText('t').toString()
  assert.ok(text.includes('alpha ') && text.includes('beta '), text)
})

it('a late joiner gets the full state at sync time', { timeout: 30000 }, async (track) => {
  const room = 'late-joiner'
  const a = track(connect(node.wsUrl, room))
  const b = track(connect(node.wsUrl, room))
  await Promise.all([waitSynced(a.provider), waitSynced(b.provider)])
  for (let i = 0; i < 30; i++) {
    a.doc.transact(() => {
      a.doc.getText('t').insert(a.doc.getText('t').length, `line ${i}\n`)
      a.doc.getMap('m').set(`k${i}`, { i, s: 'x'.repeat(i) })
    })
  }
  a.doc.getText('t').delete(0, 7) // deletions travel too (delete set)
  // B receiving everything proves the node has it.
  await waitFor(() => sameState(a.doc, b.doc), 15000, 'b to receive all of a\'s edits')

  const c = track(connect(node.wsUrl, room))
  await waitSynced(c.provider)
  // The SyncStep2 is applied before `synced` flips, so the content must be there right now.
  assert.equal(docSnapshot(c.doc), docSnapshot(a.doc))
  assert.deepEqual(Y.decodeStateVector(Y.encodeStateVector(c.doc)), Y.decodeStateVector(Y.encodeStateVector(a.doc)))
})

it('room content outlives its last client', { timeout: 30000 }, async (track) => {
  const room = 'outlives-clients'
  const a = track(connect(node.wsUrl, room))
  await waitSynced(a.provider)
  const b = track(connect(node.wsUrl, room))
  await waitSynced(b.provider)
  a.doc.getText('t').insert(0, 'still here')
  a.doc.getMap('m').set('k', 'v')
  await waitFor(() => sameState(a.doc, b.doc), 10000, 'b to receive a\'s edit')
  const expected = docSnapshot(a.doc)
  a.destroy()
  b.destroy()
  await waitFor(async () => {
    const { body } = await node.getJson('/rooms')
    const r = (body.data || []).find((x) => x.name === room)
    return !r || r.connections === 0
  }, 10000, 'the node to see both clients gone')

  const c = track(connect(node.wsUrl, room))
  await waitSynced(c.provider)
  assert.equal(docSnapshot(c.doc), expected)
})

it('a client that reconnects catches up on edits made while it was away', { timeout: 30000 }, async (track) => {
  const room = 'reconnect'
  const a = track(connect(node.wsUrl, room))
  const b = track(connect(node.wsUrl, room))
  await Promise.all([waitSynced(a.provider), waitSynced(b.provider)])
  a.doc.getText('t').insert(0, 'before;')
  await waitFor(() => sameState(a.doc, b.doc), 10000, 'initial convergence')

  b.provider.disconnect()
  await waitFor(() => !b.provider.wsconnected && b.provider.ws === null, 5000, 'b to disconnect')
  assert.equal(b.provider.synced, false)

  // Edits on both sides while B is away.
  for (let i = 0; i < 10; i++) a.doc.getText('t').insert(a.doc.getText('t').length, `a-away-${i};`)
  a.doc.getMap('m').set('while-away', 'a')
  b.doc.getText('t').insert(0, 'b-offline;')
  b.doc.getMap('m').set('offline', 'b')

  // Prove the node has A's edits before B comes back: a third client syncs them from the node.
  const c = track(connect(node.wsUrl, room))
  await waitSynced(c.provider)
  await waitFor(() => c.doc.getMap('m').get('while-away') === 'a' && c.doc.getText('t').toString().includes('a-away-9;'),
    10000, 'c to see a\'s away edits')
  assert.ok(!b.doc.getText('t').toString().includes('a-away-0;'), 'b must not get edits while disconnected')

  b.provider.connect()
  await waitSynced(b.provider)
  await waitFor(() => sameState(a.doc, b.doc) && sameState(a.doc, c.doc), 15000,
    () => `convergence after reconnect: a=${docSnapshot(a.doc)} b=${docSnapshot(b.doc)}`)
  assert.equal(a.doc.getMap('m').get('offline'), 'b')
  assert.ok(a.doc.getText('t').toString().includes('b-offline;'))
})

it('a 2 MiB update is delivered to connected clients and late joiners', { timeout: 60000 }, async (track) => {
  const room = 'big-update'
  const a = track(connect(node.wsUrl, room))
  const b = track(connect(node.wsUrl, room))
  await Promise.all([waitSynced(a.provider), waitSynced(b.provider)])

  const size = 2 * 1024 * 1024
  const pattern = 'ymesh-2MiB-0123456789abcdefghijklmnopqrstuvwxyz\n' // ASCII: 1 byte per char
  const big = pattern.repeat(Math.ceil(size / pattern.length)).slice(0, size)
  let sent = 0
  a.doc.on('update', (u, origin) => { if (origin !== a.provider) sent = Math.max(sent, u.length) })
  a.doc.getText('t').insert(0, big)
  assert.ok(sent >= size, `one update of >= 2 MiB was produced (${sent})`)

  await waitFor(() => b.doc.getText('t').length === size, 30000,
    () => `b to receive 2 MiB (has ${b.doc.getText('t').length} chars)`, 50)
  assert.ok(b.doc.getText('t').toString() === big, 'content is intact')

  const c = track(connect(node.wsUrl, room))
  await waitSynced(c.provider, 30000)
  assert.equal(c.doc.getText('t').length, size)
  assert.ok(c.doc.getText('t').toString() === big, 'late joiner content is intact')
})

it('five clients opening a brand-new room at the same instant all sync and converge', { timeout: 30000 }, async (track) => {
  const room = 'stampede-' + Date.now().toString(36)
  const clients = []
  for (let i = 0; i < 5; i++) {
    const c = track(connect(node.wsUrl, room))
    // Edit before the socket is even open: it must reach everybody.
    c.doc.getText('t').insert(0, `[c${i}]`)
    c.doc.getMap('m').set(`c${i}`, i)
    clients.push(c)
  }
  await Promise.all(clients.map((c) => waitSynced(c.provider)))
  await waitFor(() => clients.every((c) => sameState(c.doc, clients[0].doc)) &&
      clients[0].doc.getMap('m').size === 5, 15000,
  () => 'convergence: ' + clients.map((c) => docSnapshot(c.doc)).join(' | '))
  const text = clients[0].doc.getText('t').toString()
  for (let i = 0; i < 5; i++) assert.ok(text.includes(`[c${i}]`), text)
})

it('updates and awareness are echoed to their sender too', { timeout: 20000 }, async (track) => {
  const room = 'echo'
  const s = track(rawSocket(`${node.wsUrl}/${room}`))
  await s.waitOpen()
  s.send(syncStep1Frame())
  await s.waitMessage((m) => frameKind(m)[0] === 0 && frameKind(m)[1] === 1, 5000, 0, 'SyncStep2')

  const src = new Y.Doc()
  src.clientID = 4242
  src.getText('t').insert(0, 'echo me')
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, 0)
  encoding.writeVarUint(enc, 2)
  encoding.writeVarUint8Array(enc, Y.encodeStateAsUpdate(src))
  let mark = s.messages.length
  s.send(encoding.toUint8Array(enc))
  const echo = await s.waitMessage((m) => frameKind(m)[0] === 0 && frameKind(m)[1] === 2, 5000, mark, 'the echo of our update')
  const d = decoding.createDecoder(echo)
  decoding.readVarUint(d)
  decoding.readVarUint(d)
  const got = new Y.Doc()
  Y.applyUpdate(got, decoding.readVarUint8Array(d))
  assert.equal(got.getText('t').toString(), 'echo me')
  src.destroy()
  got.destroy()

  mark = s.messages.length
  s.send(awarenessFrame([{ client: 4242, clock: 1, state: { user: 'echo' } }]))
  const aw = await s.waitMessage((m) => m[0] === 1, 5000, mark, 'the echo of our awareness')
  assert.deepEqual(decodeAwarenessFrame(aw), [{ client: 4242, clock: 1, state: { user: 'echo' } }])
})
