// Garbage on the wire: malformed frames close that one connection with 4400, unknown message
// types are ignored, and the node keeps serving everybody else.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  startNode, connect, waitSynced, waitFor, withCleanup, rawSocket, syncStep1Frame,
  awarenessFrame, decodeAwarenessFrame, frameKind, prng, docSnapshot, MSG_AWARENESS
} from '../lib/node.mjs'

let node
before(async () => { node = await startNode() })
after(async () => { if (node) await node.stop() })

const it = (name, opts, fn) => test(name, opts, withCleanup(() => [node], fn))

const isStep2 = (m) => frameKind(m)[0] === 0 && frameKind(m)[1] === 1

/** Opens a raw socket on `room` and waits for the node's first frame (the room is joined). */
async function joined (track, room) {
  const s = track(rawSocket(`${node.wsUrl}/${room}`))
  await s.waitOpen()
  await s.waitMessage(() => true, 5000, 0, 'the node\'s first frame')
  return s
}

async function assertHealthy () {
  const { status, body } = await node.getJson('/healthz')
  assert.equal(status, 200, `healthz: ${JSON.stringify(body)}`)
  assert.equal(node.exited(), null, 'node process is still running')
}

const MALFORMED = [
  ['truncated varint [0x80]', [0x80]],
  ['huge length prefix [0,2,ff ff ff ff 0f]', [0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f]],
  ['sync step1 without its state vector [0,0]', [0, 0]],
  ['awareness length past the end [1,5,1,2]', [1, 5, 1, 2]],
  ['truncated varint inside sync [0,0x80]', [0, 0x80]]
]

for (const [name, bytes] of MALFORMED) {
  it(`malformed frame closes the connection with 4400: ${name}`, { timeout: 20000 }, async (track) => {
    const s = await joined(track, 'malformed')
    s.send(bytes)
    const closed = await s.waitClose(5000)
    assert.equal(closed.code, 4400, `close code for ${JSON.stringify(bytes)}: ${JSON.stringify(closed)}`)
    await assertHealthy()
  })
}

it('an unknown message type is ignored and the connection keeps working', { timeout: 20000 }, async (track) => {
  const s = await joined(track, 'unknown-type')
  const id = 880001
  s.send(awarenessFrame([{ client: id, clock: 1, state: { user: 'raw' } }]))
  const hasMe = (m) => m[0] === MSG_AWARENESS && decodeAwarenessFrame(m).some((e) => e.client === id && e.state !== null)
  await s.waitMessage(hasMe, 5000, 0, 'the echo of our awareness')

  s.send([77, 1, 2])
  // Still answered afterwards: QueryAwareness ...
  let mark = s.messages.length
  s.send([3])
  await s.waitMessage(hasMe, 5000, mark, 'the QueryAwareness answer after an unknown type')
  // ... and SyncStep1.
  mark = s.messages.length
  s.send(syncStep1Frame())
  await s.waitMessage(isStep2, 5000, mark, 'SyncStep2 after an unknown type')
  assert.equal(s.closed, null, 'the socket stays open')

  // Several unknown types in a row, including the custom-type range and an empty body.
  for (const f of [[77], [100, 0], [120, 5, 1, 2, 3, 4, 5], [11, 0, 0]]) s.send(f)
  mark = s.messages.length
  s.send(syncStep1Frame())
  await s.waitMessage(isStep2, 5000, mark, 'SyncStep2 after more unknown types')
  assert.equal(s.closed, null, 'the socket stays open')
})

it('random bytes never crash the node; each socket is answered or closed with 4400', { timeout: 60000 }, async (track) => {
  const rand = prng(0xC0FFEE)
  const outcomes = []
  for (let i = 0; i < 16; i++) {
    const len = 1 + Math.floor(rand() * 48)
    const bytes = Array.from({ length: len }, () => Math.floor(rand() * 256))
    if (i % 2 === 0) bytes[0] = Math.floor(rand() * 4) // half of them start with a real type
    const s = await joined(track, `random-${i}`)
    s.send(bytes)
    const mark = s.messages.length
    if (!s.closed) s.send(syncStep1Frame())
    await waitFor(() => s.closed || s.messages.slice(mark).some(isStep2), 5000,
      () => `either close or SyncStep2 after random frame ${Buffer.from(bytes).toString('hex')}`)
    if (s.closed) {
      assert.equal(s.closed.code, 4400, `close code after ${Buffer.from(bytes).toString('hex')}: ${JSON.stringify(s.closed)}`)
    }
    outcomes.push(s.closed ? 'closed' : 'open')
    s.terminate()
  }
  await assertHealthy()
  // The generator must actually exercise the 4400 path.
  assert.ok(outcomes.includes('closed'), `outcomes: ${outcomes.join(',')}`)
})

it('after all the garbage the node is up and a fresh pair of providers converges', { timeout: 30000 }, async (track) => {
  // Throw everything at one room that real clients then use.
  const room = 'after-garbage'
  for (const [, bytes] of MALFORMED) {
    const s = await joined(track, room)
    s.send(bytes)
    await s.waitClose(5000)
  }
  const u = await joined(track, room)
  u.send([77, 1, 2])
  await assertHealthy()

  const a = track(connect(node.wsUrl, room))
  const b = track(connect(node.wsUrl, room))
  await Promise.all([waitSynced(a.provider), waitSynced(b.provider)])
  a.doc.getText('t').insert(0, 'still ')
  b.doc.getMap('m').set('works', true)
  b.doc.getText('t').insert(0, 'works')
  await waitFor(() => docSnapshot(a.doc) === docSnapshot(b.doc) && b.doc.getText('t').length === 11, 10000,
    () => `convergence: a=${docSnapshot(a.doc)} b=${docSnapshot(b.doc)}`)
  assert.equal(u.closed, null, 'the socket that only sent an unknown type is still open')
})
