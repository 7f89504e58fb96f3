// SIGTERM: open sockets are closed with 1001 and the process exits 0.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startNode, connect, waitSynced, waitFor, rawSocket, destroyAll } from '../lib/node.mjs'

test('SIGTERM closes open client sockets with 1001 and the process exits 0', { timeout: 40000 }, async () => {
  const node = await startNode()
  const clients = []
  const sockets = []
  try {
    const s = rawSocket(`${node.wsUrl}/shutdown`)
    sockets.push(s)
    await s.waitOpen()
    await s.waitMessage(() => true, 5000, 0, 'the node\'s first frame')
    // A stock client too, to see what it is told.
    const c = connect(node.wsUrl, 'shutdown', { shouldReconnect: () => false })
    clients.push(c)
    await waitSynced(c.provider)
    const closes = []
    c.provider.on('connection-close', (ev) => { if (ev) closes.push(ev.code) })

    node.proc.kill('SIGTERM')
    const closed = await s.waitClose(10000)
    assert.equal(closed.code, 1001, `raw socket close: ${JSON.stringify(closed)}`)
    await waitFor(() => closes.length > 0, 10000, 'the provider to see its socket close')
    assert.equal(closes[0], 1001)
    const { code, signal } = await node.waitExit(15000)
    assert.equal(signal, null, `exited by signal ${signal}`)
    assert.equal(code, 0, `exit code; log tail:\n${node.logsTail(40)}`)
  } catch (e) {
    e.message += `\n--- node log tail ---\n${node.logsTail(60)}`
    throw e
  } finally {
    destroyAll(clients)
    for (const s of sockets) s.terminate()
    await node.kill()
  }
})
