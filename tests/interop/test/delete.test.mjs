// Deleting a room with stock y-websocket clients connected, on a two-node mesh: the room
// disappears on both nodes, a client's stale copy does not bring it back, and an edit made
// after the deletion does (with the whole document), because saved edits are never lost; an
// export posted with ?undelete=true restores the room for stock clients on every node.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startNode, connect, waitSynced, waitFor, getJson, destroyAll } from '../lib/node.mjs'

const peerUrl = (node) => `ws://127.0.0.1:${node.port}`

test('a deleted room goes from every node, stays gone for stale copies, and comes back with new edits', async () => {
  const nodes = []
  const clients = []
  try {
    const B = await startNode()
    nodes.push(B)
    const A = await startNode({ args: ['--peer', peerUrl(B)] })
    nodes.push(A)
    const room = 'deleted-with-clients'

    const onA = connect(A.wsUrl, room)
    clients.push(onA)
    await waitSynced(onA.provider)
    onA.doc.getText('t').insert(0, 'old')
    const onB = connect(B.wsUrl, room)
    clients.push(onB)
    await waitFor(() => onB.doc.getText('t').toString() === 'old', 10000, 'edit replicated to B')

    // y-websocket v3 takes a 44xx close as final ("the document doesn't exist anymore"):
    // it stops reconnecting and emits `closed`.
    const closed = []
    onA.provider.on('closed', (ev) => closed.push(ev.code))

    const res = await fetch(`${A.url}/rooms/${room}`, { method: 'DELETE', signal: AbortSignal.timeout(10000) })
    assert.equal(res.status, 200, await res.text())
    await waitFor(() => closed.includes(4410), 10000, 'client closed for good with 4410')

    // Gone on both nodes (B got the tombstone over the link).
    for (const n of [A, B]) {
      await waitFor(async () => (await getJson(`${n.url}/rooms/${room}`)).status === 404, 10000,
        `room deleted on ${n.url}`)
    }

    // The application reconnects its providers anyway, with their old copies: those are
    // dropped, the room stays gone, and a fresh client sees an empty document.
    assert.equal(onA.provider.shouldConnect, false, 'the provider stopped after 4410')
    onA.provider.connect()
    onB.provider.connect()
    await waitSynced(onA.provider)
    await waitSynced(onB.provider)
    const fresh = connect(B.wsUrl, room)
    clients.push(fresh)
    await waitSynced(fresh.provider)
    assert.equal(fresh.doc.getText('t').toString(), '')
    for (const n of [A, B]) {
      assert.equal((await getJson(`${n.url}/rooms/${room}`)).status, 404, 'stale copies do not bring it back')
    }

    // A user keeps typing in the old copy: the room comes back everywhere, whole.
    onA.doc.getText('t').insert(3, ' and new')
    await waitFor(() => fresh.doc.getText('t').toString() === 'old and new', 10000,
      'the resurrected room reaches a client on the other node')
    for (const n of [A, B]) {
      await waitFor(async () => {
        const r = await getJson(`${n.url}/rooms/${room}?format=json`)
        return r.status === 200 && r.body.data.t === 'old and new'
      }, 10000, `room back on ${n.url}`)
    }
  } catch (e) {
    if (e && typeof e.message === 'string') {
      e.message += '\n' + nodes.map((n, i) => `--- node ${i} log tail ---\n${n.logsTail(40)}`).join('\n')
    }
    throw e
  } finally {
    destroyAll(clients)
    for (const n of nodes) await n.kill()
  }
})

test('an export restored with ?undelete=true reaches stock clients on every node, with nothing extra', async () => {
  const nodes = []
  const clients = []
  try {
    const B = await startNode()
    nodes.push(B)
    const A = await startNode({ args: ['--peer', peerUrl(B)] })
    nodes.push(A)
    const room = 'restored-from-export'

    const onA = connect(A.wsUrl, room)
    clients.push(onA)
    await waitSynced(onA.provider)
    onA.doc.getText('t').insert(0, 'precious')
    await waitFor(async () => {
      const r = await getJson(`${B.url}/rooms/${room}?format=json`)
      return r.status === 200 && r.body.data.t === 'precious'
    }, 10000, 'room on B')
    const exported = new Uint8Array(await (await fetch(`${A.url}/rooms/${room}`)).arrayBuffer())
    destroyAll(clients.splice(0))

    const del = await fetch(`${A.url}/rooms/${room}`, { method: 'DELETE', signal: AbortSignal.timeout(10000) })
    assert.equal(del.status, 200, await del.text())
    for (const n of [A, B]) {
      await waitFor(async () => (await getJson(`${n.url}/rooms/${room}`)).status === 404, 10000,
        `room deleted on ${n.url}`)
    }

    // Posting the export is dropped, and the answer says why.
    const post = (query) => fetch(`${A.url}/rooms/${room}${query}`, {
      method: 'POST', body: exported, signal: AbortSignal.timeout(10000)
    }).then(async (r) => ({ status: r.status, body: await r.json() }))
    const dropped = await post('')
    assert.equal(dropped.status, 200)
    assert.equal(dropped.body.data.changed, false)
    assert.ok(dropped.body.data.deleted, JSON.stringify(dropped.body))
    assert.match(dropped.body.data.message, /was deleted/)

    // Restored: a stock client on the other node gets the document, and nothing else.
    const restored = await post('?undelete=true')
    assert.equal(restored.status, 200)
    assert.equal(restored.body.data.undeleted, true, JSON.stringify(restored.body))
    const onB = connect(B.wsUrl, room)
    clients.push(onB)
    await waitFor(() => onB.doc.getText('t').toString() === 'precious', 10000,
      'the restored room reaches a stock client on B')
    assert.deepEqual([...onB.doc.share.keys()], ['t'], 'the undelete marker adds no type')
    assert.deepEqual(onB.doc.toJSON(), { t: 'precious' })
  } catch (e) {
    if (e && typeof e.message === 'string') {
      e.message += '\n' + nodes.map((n, i) => `--- node ${i} log tail ---\n${n.logsTail(40)}`).join('\n')
    }
    throw e
  } finally {
    destroyAll(clients)
    for (const n of nodes) await n.kill()
  }
})
