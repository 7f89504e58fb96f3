// Awareness: fan-out, cleanup on clean and abrupt disconnects, late joiners, QueryAwareness.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  startNode, connect, waitSynced, waitFor, withCleanup, rawSocket, syncStep1Frame,
  awarenessFrame, decodeAwarenessFrame, frameKind, MSG_AWARENESS
} from '../lib/node.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))

let node
before(async () => { node = await startNode() })
after(async () => { if (node) await node.stop() })

const it = (name, opts, fn) => test(name, opts, withCleanup(() => [node], fn))

// Remote states time out after 30 s in y-protocols; anything removed well before that was
// removed because the node broadcast the removal.
const REMOVAL_MS = 8000

const stateOf = (client, id) => client.awareness.getStates().get(id)

it('awareness appears on the other client and is removed on a clean disconnect', { timeout: 30000 }, async (track) => {
  const room = 'aw-clean'
  const a = track(connect(node.wsUrl, room))
  const b = track(connect(node.wsUrl, room))
  await Promise.all([waitSynced(a.provider), waitSynced(b.provider)])
  a.awareness.setLocalStateField('user', { name: 'alice', color: '#f80' })
  await waitFor(() => stateOf(b, a.doc.clientID)?.user?.name === 'alice', 5000, 'b to see alice')
  b.awareness.setLocalStateField('user', { name: 'bob' })
  await waitFor(() => stateOf(a, b.doc.clientID)?.user?.name === 'bob', 5000, 'a to see bob')

  a.awareness.setLocalStateField('cursor', { anchor: 1, head: 3 })
  await waitFor(() => stateOf(b, a.doc.clientID)?.cursor?.head === 3, 5000, 'b to see alice\'s cursor')

  const aId = a.doc.clientID
  a.destroy()
  await waitFor(() => !b.awareness.getStates().has(aId), REMOVAL_MS, 'alice to be removed on b')
  assert.ok(b.provider.wsconnected, 'b stays connected')
})

it('awareness is removed when a client process is killed (SIGKILL, no close frame)', { timeout: 30000 }, async (track) => {
  const room = 'aw-sigkill'
  const observer = track(connect(node.wsUrl, room))
  await waitSynced(observer.provider)
  const childId = 912345
  const child = spawn(process.execPath, [
    path.join(here, '../lib/child-client.mjs'), node.wsUrl, room, String(childId),
    JSON.stringify({ user: { name: 'doomed' } })
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => { out += d })
  child.stderr.on('data', (d) => { err += d })
  let exited = false
  child.on('exit', () => { exited = true })
  try {
    await waitFor(() => out.includes(`READY ${childId}`), 15000, () => `child to sync (stdout=${out} stderr=${err})`)
    await waitFor(() => stateOf(observer, childId)?.user?.name === 'doomed', 5000, 'observer to see the child')
    await waitFor(() => observer.doc.getText('t').toString().includes(`child ${childId};`), 5000, 'observer to get the child\'s edit')
    child.kill('SIGKILL')
    await waitFor(() => exited, 5000, 'child to die')
    await waitFor(() => !observer.awareness.getStates().has(childId), REMOVAL_MS,
      'the killed client\'s awareness to be removed by the node')
    assert.ok(observer.provider.wsconnected, 'observer stays connected')
  } finally {
    if (!exited) child.kill('SIGKILL')
  }
})

/** A raw socket that joined `room` and published awareness for `clientId`. */
async function rawWithAwareness (track, room, clientId, state) {
  const s = track(rawSocket(`${node.wsUrl}/${room}`))
  await s.waitOpen()
  s.send(syncStep1Frame())
  await s.waitMessage((m) => frameKind(m)[0] === 0 && frameKind(m)[1] === 1, 5000, 0, 'SyncStep2')
  s.send(awarenessFrame([{ client: clientId, clock: 1, state }]))
  return s
}

it('awareness is removed when a raw socket is terminated without a close frame', { timeout: 30000 }, async (track) => {
  const room = 'aw-terminate'
  const observer = track(connect(node.wsUrl, room))
  await waitSynced(observer.provider)
  const id = 771001
  const s = await rawWithAwareness(track, room, id, { user: { name: 'raw' } })
  await waitFor(() => stateOf(observer, id)?.user?.name === 'raw', 5000, 'observer to see the raw client')
  s.terminate()
  await waitFor(() => !observer.awareness.getStates().has(id), REMOVAL_MS, 'raw client awareness removal after terminate')
})

it('awareness is removed when a client closes cleanly without sending a null state', { timeout: 30000 }, async (track) => {
  const room = 'aw-close-no-null'
  const observer = track(connect(node.wsUrl, room))
  await waitSynced(observer.provider)
  const id = 771002
  const s = await rawWithAwareness(track, room, id, { user: { name: 'quiet' } })
  await waitFor(() => stateOf(observer, id)?.user?.name === 'quiet', 5000, 'observer to see the raw client')
  s.close(1000, 'bye')
  await s.waitClose()
  await waitFor(() => !observer.awareness.getStates().has(id), REMOVAL_MS, 'raw client awareness removal after close')
})

it('a late joiner sees existing awareness right after sync', { timeout: 30000 }, async (track) => {
  const room = 'aw-late'
  const a = track(connect(node.wsUrl, room))
  const o = track(connect(node.wsUrl, room))
  await Promise.all([waitSynced(a.provider), waitSynced(o.provider)])
  // Explicit states: a clock-0 state (the provider's initial {}) is never applied by a remote
  // y-protocols Awareness, so it is not something a late joiner can be expected to see.
  a.awareness.setLocalState({ user: { name: 'early bird' } })
  o.awareness.setLocalState({ user: { name: 'observer' } })
  await waitFor(() => stateOf(o, a.doc.clientID)?.user?.name === 'early bird', 5000, 'the node to have a\'s state')
  await waitFor(() => stateOf(a, o.doc.clientID)?.user?.name === 'observer', 5000, 'the node to have o\'s state')

  const started = Date.now()
  const late = track(connect(node.wsUrl, room))
  await waitSynced(late.provider)
  // Well under the 15 s renewal period of the stock client: the node must push what it has.
  await waitFor(() => stateOf(late, a.doc.clientID)?.user?.name === 'early bird', 2000,
    'the late joiner to get existing awareness without waiting for a renewal')
  await waitFor(() => stateOf(late, o.doc.clientID)?.user?.name === 'observer', 2000, 'the late joiner to get every state')
  assert.ok(Date.now() - started < 10000)
})

it('QueryAwareness is answered with all awareness states', { timeout: 30000 }, async (track) => {
  const room = 'aw-query'
  const a = track(connect(node.wsUrl, room))
  const b = track(connect(node.wsUrl, room))
  await Promise.all([waitSynced(a.provider), waitSynced(b.provider)])
  a.awareness.setLocalState({ user: { name: 'qa' } })
  b.awareness.setLocalState({ user: { name: 'qb' } })
  await waitFor(() => stateOf(b, a.doc.clientID) && stateOf(a, b.doc.clientID), 5000, 'a and b to see each other')

  const s = track(rawSocket(`${node.wsUrl}/${room}`))
  await s.waitOpen()
  s.send(syncStep1Frame())
  await s.waitMessage((m) => frameKind(m)[0] === 0 && frameKind(m)[1] === 1, 5000, 0, 'SyncStep2')
  const mark = s.messages.length
  s.send([3])
  const hasAll = (m) => {
    if (m[0] !== MSG_AWARENESS) return false
    const ids = decodeAwarenessFrame(m).filter((e) => e.state !== null).map((e) => e.client)
    return ids.includes(a.doc.clientID) && ids.includes(b.doc.clientID)
  }
  const reply = await s.waitMessage(hasAll, 5000, mark, 'an awareness frame with both states after QueryAwareness')
  const entries = decodeAwarenessFrame(reply)
  assert.deepEqual(entries.find((e) => e.client === a.doc.clientID).state, { user: { name: 'qa' } })
  assert.deepEqual(entries.find((e) => e.client === b.doc.clientID).state, { user: { name: 'qb' } })
  assert.equal(s.closed, null)
})

it('an awareness state that is not JSON is refused with 4400 and reaches no stock client', { timeout: 30000 }, async (track) => {
  const room = 'aw-not-json'
  const a = track(connect(node.wsUrl, room))
  await waitSynced(a.provider)
  a.awareness.setLocalState({ user: { name: 'stock' } })
  const bad = 771003
  const good = 771004
  const s = track(rawSocket(`${node.wsUrl}/${room}`))
  await s.waitOpen()
  s.send(syncStep1Frame())
  await s.waitMessage((m) => frameKind(m)[0] === 0 && frameKind(m)[1] === 1, 5000, 0, 'SyncStep2')
  // A valid entry and one whose state is not JSON, in one update: all of it is refused. The
  // stock client runs JSON.parse on every state it receives and would throw on this one.
  s.send(awarenessFrame([
    { client: good, clock: 1, state: { user: { name: 'fine' } } },
    { client: bad, clock: 1, json: '{not json' }
  ]))
  const closed = await s.waitClose()
  assert.equal(closed.code, 4400, `closed with ${JSON.stringify(closed)}`)
  assert.match(closed.reason, /JSON/)

  // The stock client in the room keeps working: it edits, and a late joiner syncs with it and
  // sees its awareness but nothing of the refused update.
  a.doc.getText('t').insert(0, 'still here')
  const late = track(connect(node.wsUrl, room))
  await waitSynced(late.provider)
  await waitFor(() => late.doc.getText('t').toString() === 'still here', 5000, 'the late joiner to get the edit')
  await waitFor(() => stateOf(late, a.doc.clientID)?.user?.name === 'stock', 5000, 'the late joiner to see the stock client')
  assert.equal(stateOf(late, bad), undefined)
  assert.equal(stateOf(late, good), undefined)
  assert.equal(stateOf(a, bad), undefined)
  assert.equal(stateOf(a, good), undefined)
  assert.ok(a.provider.wsconnected, 'the stock client stays connected')
})
