// Room naming, isolation, routes and the HTTP listing.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  startNode, connect, waitSynced, waitFor, withCleanup, rawSocket, syncStep1Frame, frameKind
} from '../lib/node.mjs'

let node
before(async () => { node = await startNode() })
after(async () => { if (node) await node.stop() })

const it = (name, opts, fn) => test(name, opts, withCleanup(() => [node], fn))

const roomNames = async () => {
  const { status, body } = await node.getJson('/rooms')
  assert.equal(status, 200)
  assert.ok(Array.isArray(body.data), `GET /rooms data is an array: ${JSON.stringify(body)}`)
  return body.data
}

/** Writes `text` into room `urlName` (as it appears in the URL) and keeps the writer open. */
async function writer (track, urlName, text, base = node.wsUrl) {
  const c = track(connect(base, urlName))
  await waitSynced(c.provider)
  c.doc.getText('t').insert(0, text)
  return c
}

/** A fresh client on `urlName`; resolves with its text once it has `expected` (or times out). */
async function readText (track, urlName, expected, base = node.wsUrl) {
  const c = track(connect(base, urlName))
  await waitSynced(c.provider)
  await waitFor(() => c.doc.getText('t').toString() === expected, 5000,
    () => `room "${urlName}" to read "${expected}" (has "${c.doc.getText('t').toString()}")`)
  return c
}

it('rooms are isolated, including names that are prefixes of each other', { timeout: 30000 }, async (track) => {
  const rooms = [['a', 'in a'], ['ab', 'in ab'], ['a%2Fb', 'in a/b'], ['b', 'in b']]
  const writers = []
  for (const [url, text] of rooms) writers.push(await writer(track, url, text))
  // Every writer's edit must have reached the node: a reader sees exactly its own room's text.
  for (const [url, text] of rooms) await readText(track, url, text)
  // And nothing leaked into the writers from the other rooms.
  rooms.forEach(([, text], i) => assert.equal(writers[i].doc.getText('t').toString(), text))

  const listed = (await roomNames()).map((r) => r.name)
  for (const n of ['a', 'ab', 'a/b', 'b']) assert.ok(listed.includes(n), `GET /rooms lists "${n}": ${JSON.stringify(listed)}`)
  assert.ok(!listed.includes('a%2Fb'), 'names are percent-decoded')
})

it('"+" is a literal plus: a+b and a b are different rooms', { timeout: 30000 }, async (track) => {
  await writer(track, 'x+y', 'plus')
  await writer(track, 'x%20y', 'space')
  await readText(track, 'x+y', 'plus')
  await readText(track, 'x%2By', 'plus') // %2B decodes to the same "+" name
  await readText(track, 'x%20y', 'space')
  const listed = await roomNames()
  const names = listed.map((r) => r.name)
  assert.ok(names.includes('x+y'), JSON.stringify(names))
  assert.ok(names.includes('x y'), JSON.stringify(names))
})

it('percent-encoded and unicode room names work', { timeout: 30000 }, async (track) => {
  const names = ['café ☕ 日本語 🚀', '100%', 'with space & ampersand?', 'emoji👩‍💻', 'dots.and-dashes_and~tilde']
  for (const [i, n] of names.entries()) await writer(track, encodeURIComponent(n), `content ${i}`)
  for (const [i, n] of names.entries()) await readText(track, encodeURIComponent(n), `content ${i}`)
  // Lowercase hex escapes decode to the same name.
  await readText(track, encodeURIComponent(names[0]).replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase()), 'content 0')
  const listed = (await roomNames()).map((r) => r.name)
  for (const n of names) assert.ok(listed.includes(n), `GET /rooms lists ${JSON.stringify(n)}: ${JSON.stringify(listed)}`)
})

it('a 512-byte room name works and a 513-byte one is refused', { timeout: 30000 }, async (track) => {
  const ok = 'é'.repeat(256) // 512 bytes of UTF-8
  assert.equal(Buffer.byteLength(ok), 512)
  await writer(track, encodeURIComponent(ok), 'long name')
  await readText(track, encodeURIComponent(ok), 'long name')
  assert.ok((await roomNames()).some((r) => r.name === ok), 'GET /rooms lists the 512-byte name')

  const tooLong = 'x' + ok
  const s = track(rawSocket(`${node.wsUrl}/${encodeURIComponent(tooLong)}`))
  // Refused at upgrade (HTTP 4xx) or closed without ever syncing.
  await waitFor(() => s.unexpectedResponse || s.closed || s.error, 5000, 'the 513-byte room to be refused')
  if (s.unexpectedResponse) {
    assert.ok(s.unexpectedResponse >= 400 && s.unexpectedResponse < 500, `HTTP ${s.unexpectedResponse}`)
  } else if (s.closed) {
    assert.ok(s.closed.code !== 1000 && s.closed.code !== 1001, `close code ${s.closed.code}`)
  }
  assert.ok(!s.messages.some((m) => m[0] === 0), 'no sync message for a refused room')
  assert.ok(!(await roomNames()).some((r) => r.name === tooLong), 'the refused room is not listed')
})

it('/sync/{room} and /workspaces/{room}/sync reach the same room as /rooms/{room}', { timeout: 30000 }, async (track) => {
  const room = 'aliased'
  const w = await writer(track, room, 'via rooms')
  await readText(track, room, 'via rooms', `${node.url.replace('http', 'ws')}/sync`)
  await readText(track, `${room}/sync`, 'via rooms', `${node.url.replace('http', 'ws')}/workspaces`)
  // And writes through an alias reach /rooms clients.
  const viaSync = track(connect(`${node.url.replace('http', 'ws')}/sync`, room))
  await waitSynced(viaSync.provider)
  viaSync.doc.getMap('m').set('from', 'sync route')
  await waitFor(() => w.doc.getMap('m').get('from') === 'sync route', 5000, 'the /rooms client to get the /sync edit')
})

it('HTTP: /healthz, / and /rooms with connection counts', { timeout: 30000 }, async (track) => {
  const h = await node.getJson('/healthz')
  assert.equal(h.status, 200)
  assert.ok(h.body && typeof h.body.data === 'object' && h.body.data !== null, JSON.stringify(h.body))

  const room = 'counted'
  const a = await writer(track, room, 'x')
  const b = track(connect(node.wsUrl, room))
  await waitSynced(b.provider)
  await waitFor(async () => (await roomNames()).find((r) => r.name === room)?.connections === 2, 5000,
    'GET /rooms to report 2 connections')

  const root = await node.getJson('/')
  assert.equal(root.status, 200)
  assert.equal(root.body.data.name, 'ymesh')
  assert.equal(typeof root.body.data.version, 'string')
  assert.equal(typeof root.body.data.rooms, 'number')
  assert.ok(root.body.data.rooms >= 1)

  a.destroy()
  await waitFor(async () => (await roomNames()).find((r) => r.name === room)?.connections === 1, 5000,
    'GET /rooms to report 1 connection after one client left')
})

it('a raw socket gets SyncStep1 from the node on open and SyncStep2 for its SyncStep1', { timeout: 30000 }, async (track) => {
  const s = track(rawSocket(`${node.wsUrl}/raw-handshake`))
  await s.waitOpen()
  await s.waitMessage((m) => frameKind(m)[0] === 0 && frameKind(m)[1] === 0, 5000, 0, 'the node\'s SyncStep1')
  s.send(syncStep1Frame())
  // Even for an empty room: the stock client counts itself synced only on a SyncStep2.
  await s.waitMessage((m) => frameKind(m)[0] === 0 && frameKind(m)[1] === 1, 5000, 0, 'SyncStep2')
})
