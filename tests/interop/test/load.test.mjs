// Many stock clients in one room.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { setImmediate as yieldToLoop } from 'node:timers/promises'
import { Y, startNode, connect, waitSynced, waitFor, withCleanup, docSnapshot, prng } from '../lib/node.mjs'

let node
before(async () => { node = await startNode() })
after(async () => { if (node) await node.stop() })

const it = (name, opts, fn) => test(name, opts, withCleanup(() => [node], fn))

it('50 clients each making 20 edits converge', { timeout: 90000 }, async (track) => {
  const N = 50
  const EDITS = 20
  const room = 'fifty'
  const clients = []
  for (let i = 0; i < N; i++) clients.push(track(connect(node.wsUrl, room)))
  await Promise.all(clients.map((c) => waitSynced(c.provider, 30000)))

  const rand = prng(42)
  let expectedLen = 0
  for (let j = 0; j < EDITS; j++) {
    for (let i = 0; i < N; i++) {
      const { doc } = clients[i]
      const t = doc.getText('t')
      const s = `${i}.${j};`
      expectedLen += s.length
      doc.transact(() => {
        t.insert(Math.floor(rand() * (t.length + 1)), s)
        doc.getMap('m').set(`c${i}`, j)
      })
    }
    // Let the network interleave with the next round (a yield, not a timed wait).
    await yieldToLoop()
  }

  const ref = () => clients[0].doc
  await waitFor(() => {
    if (ref().getText('t').length !== expectedLen) return false
    const s0 = docSnapshot(ref())
    return clients.every((c) => c.doc.getText('t').length === expectedLen && docSnapshot(c.doc) === s0)
  }, 60000, () => {
    const lens = clients.map((c) => c.doc.getText('t').length)
    return `all ${N} docs to converge (expected text length ${expectedLen}, got min ${Math.min(...lens)} max ${Math.max(...lens)})`
  }, 50)

  const m = ref().getMap('m').toJSON()
  assert.equal(Object.keys(m).length, N)
  for (let i = 0; i < N; i++) assert.equal(m[`c${i}`], EDITS - 1)
  const sv0 = Buffer.from(Y.encodeStateVector(ref()))
  for (const c of clients) assert.equal(Buffer.compare(Buffer.from(Y.encodeStateVector(c.doc)), sv0), 0)
})
