// Maintenance commands from a real ymesh node to stock y-websocket providers using the
// helper in clients/js: each kind reaches an opted-in client once and its result is
// aggregated on the node; a client that did not opt in never gets a 103 frame.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startNode, connect, waitSynced, waitFor, getJson, destroyAll, rawSocket, syncStep1Frame, frameKind } from '../lib/node.mjs'
import { commands } from '../lib/clients-js.mjs'

const { attachCommands, CommandDedup } = commands

async function issue (node, room, body) {
  const res = await fetch(`${node.url}/rooms/${room}/commands`, {
    method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(10000)
  })
  const json = await res.json()
  assert.equal(res.status, 200, JSON.stringify(json))
  return json.data.id
}

async function report (node, id, pred, what) {
  let last = null
  await waitFor(async () => {
    last = (await getJson(`${node.url}/commands/${id}`)).body.data
    return pred(last)
  }, 10000, () => `${what}: ${JSON.stringify(last)}`)
  return last
}

test('every kind reaches an opted-in JavaScript client once; a stock client gets none', async () => {
  const node = await startNode()
  const clients = []
  const sockets = []
  try {
    const room = 'js-commands'
    // A stock socket that did not opt in, watching every frame it receives.
    const stock = rawSocket(`${node.wsUrl}/${room}`)
    sockets.push(stock)
    await stock.waitOpen()
    stock.send(syncStep1Frame())

    const calls = []
    const handler = (kind) => async (command) => {
      calls.push(kind)
      return { handled: kind, room: command.room }
    }
    // One document on two providers to the same node (a tab and a worker, say): one dedup.
    const dedup = new CommandDedup()
    const a = connect(node.wsUrl, room, { params: { commands: '1' } })
    clients.push(a)
    const b = connect(node.wsUrl, room, { params: { commands: '1' }, doc: a.doc })
    clients.push(b)
    const handlers = {
      migrate: handler('migrate'),
      reindex: handler('reindex'),
      compact: handler('compact'),
      invalidate: handler('invalidate')
    }
    attachCommands(a.provider, handlers, { dedup })
    attachCommands(b.provider, handlers, { dedup })
    await waitSynced(a.provider)
    await waitSynced(b.provider)
    a.doc.getText('t').insert(0, 'content')
    await waitFor(async () => (await getJson(`${node.url}/rooms/${room}?format=json`)).body?.data?.t === 'content',
      10000, 'content on the node')

    const clientId = String(a.doc.clientID)
    for (const [kind, args] of [['compact', {}], ['reindex', {}], ['migrate', { version: 2 }], ['invalidate', {}]]) {
      const id = await issue(node, room, { kind, args })
      const r = await report(node, id, (d) => d?.done === true, `${kind} aggregated`)
      const fromClient = r.results.find((x) => x.responder === clientId)
      assert.ok(fromClient, `${kind}: the client answered: ${JSON.stringify(r)}`)
      assert.equal(fromClient.status, 'ok')
      assert.equal(fromClient.responder_kind, 'client')
      assert.equal(fromClient.detail.handled, kind)
      const fromNode = r.results.find((x) => x.responder_kind === 'node')
      assert.equal(fromNode.status, 'ok', JSON.stringify(r))
      assert.deepEqual(r.pending, [])
    }
    assert.deepEqual(calls, ['compact', 'reindex', 'migrate', 'invalidate'], 'each command ran once')
    assert.equal(a.doc.getText('t').toString(), 'content')
    const rooms = (await getJson(`${node.url}/rooms`)).body.data
    assert.equal(rooms.find((r) => r.name === room).schema_version, 2)
    assert.ok(stock.messages.length > 0, 'the stock socket synced')
    assert.ok(stock.messages.every((f) => frameKind(f)[0] !== 103), 'no 103 frame for a client that did not opt in')
    assert.equal(stock.closed, null, 'the stock socket is still connected')
  } catch (e) {
    if (e && typeof e.message === 'string') e.message += '\n' + node.logsTail(40)
    throw e
  } finally {
    destroyAll(clients)
    for (const s of sockets) s.terminate()
    await node.kill()
  }
})

test('the example invalidate handler reconnects, and its answer on the new connection is counted', async () => {
  const node = await startNode()
  const clients = []
  try {
    const room = 'js-invalidate'
    const c = connect(node.wsUrl, room, { params: { commands: '1' } })
    clients.push(c)
    attachCommands(c.provider, { invalidate: commands.invalidateHandler({}) })
    await waitSynced(c.provider)
    c.doc.getText('t').insert(0, 'kept')
    await waitFor(async () => (await getJson(`${node.url}/rooms/${room}?format=json`)).body?.data?.t === 'kept',
      10000, 'content on the node')
    const id = await issue(node, room, { kind: 'invalidate' })
    const r = await report(node, id, (d) => d?.done === true, 'invalidate aggregated')
    const fromClient = r.results.find((x) => x.responder === String(c.doc.clientID))
    assert.ok(fromClient, JSON.stringify(r))
    assert.equal(fromClient.status, 'ok')
    assert.equal(fromClient.detail.reconnected, true)
    assert.equal(r.counts.timeout, 0)
    await waitSynced(c.provider)
    assert.equal(c.doc.getText('t').toString(), 'kept')
  } catch (e) {
    if (e && typeof e.message === 'string') e.message += '\n' + node.logsTail(40)
    throw e
  } finally {
    destroyAll(clients)
    await node.kill()
  }
})

test('a triangle of nodes: one command reaches every node and every JavaScript client once', async () => {
  const nodes = []
  const clients = []
  try {
    const B = await startNode()
    nodes.push(B)
    const C = await startNode({ args: ['--peer', `ws://127.0.0.1:${B.port}`] })
    nodes.push(C)
    const A = await startNode({ args: ['--peer', `ws://127.0.0.1:${B.port}`, '--peer', `ws://127.0.0.1:${C.port}`] })
    nodes.push(A)
    const linked = async (n, count) => waitFor(async () => {
      const { body } = await getJson(`${n.url}/peers`)
      return body.data.filter((p) => p.state === 'connected').length >= count
    }, 20000, `${n.url} linked with both others`)
    for (const n of nodes) await linked(n, 2)

    const room = 'js-triangle'
    const calls = new Map()
    const handlers = (name) => ({
      migrate: async (command) => {
        calls.set(name, (calls.get(name) ?? 0) + 1)
        return { version: command.args.version }
      }
    })
    // One client on each node, and a phone with one document on two nodes (one dedup).
    for (const [name, n] of [['a', A], ['b', B], ['c', C]]) {
      const c = connect(n.wsUrl, room, { params: { commands: '1' } })
      clients.push(c)
      attachCommands(c.provider, handlers(name))
      await waitSynced(c.provider)
    }
    const dedup = new CommandDedup()
    const phoneB = connect(B.wsUrl, room, { params: { commands: '1' } })
    const phoneC = connect(C.wsUrl, room, { params: { commands: '1' }, doc: phoneB.doc })
    clients.push(phoneB, phoneC)
    attachCommands(phoneB.provider, handlers('phone'), { dedup })
    attachCommands(phoneC.provider, handlers('phone'), { dedup })
    await waitSynced(phoneB.provider)
    await waitSynced(phoneC.provider)
    // Every client shows presence (the initial empty state has clock 0, which other clients
    // ignore, so set a field); once all see all four, every node has matched each connection
    // to its client id.
    clients.forEach((c, i) => c.awareness.setLocalStateField('name', `client-${i}`))
    await waitFor(() => clients.every((c) => c.awareness.getStates().size >= 4), 10000,
      () => 'presence everywhere: ' + clients.map((c) => c.awareness.getStates().size).join(','))

    const id = await issue(A, room, { kind: 'migrate', args: { version: 4 } })
    const r = await report(A, id, (d) => d?.done === true, 'every answer')
    assert.deepEqual([...calls.entries()].sort(), [['a', 1], ['b', 1], ['c', 1], ['phone', 1]],
      `each client acted once: ${JSON.stringify([...calls])}`)
    const nodeAnswers = r.results.filter((x) => x.responder_kind === 'node')
    assert.equal(nodeAnswers.length, 3, JSON.stringify(r))
    assert.ok(nodeAnswers.every((x) => x.status === 'ok'), JSON.stringify(r))
    const clientAnswers = r.results.filter((x) => x.responder_kind === 'client')
    assert.equal(clientAnswers.length, 4, JSON.stringify(r))
    assert.ok(clientAnswers.every((x) => x.status === 'ok' && x.detail.version === 4), JSON.stringify(r))
    // Each answer is under the client's Yjs client id (the nodes learnt it from the first
    // awareness message of each connection).
    const ids = new Set(clients.map((c) => String(c.doc.clientID)))
    assert.deepEqual(new Set(clientAnswers.map((x) => x.responder)), ids, JSON.stringify(r))
    assert.deepEqual(r.pending, [])
  } catch (e) {
    if (e && typeof e.message === 'string') {
      e.message += '\n' + nodes.map((n, i) => `--- node ${i} ---\n${n.logsTail(30)}`).join('\n')
    }
    throw e
  } finally {
    destroyAll(clients)
    for (const n of nodes) await n.kill()
  }
})
