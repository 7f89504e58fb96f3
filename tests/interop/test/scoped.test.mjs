// Room-scoped tokens with the stock y-websocket client: a read-only viewer stays connected
// well past the client's 30 s message timeout while its edits are refused (the node relays its
// presence, which keeps the stock client alive), and a token for another room is refused.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import {
  startNode, connect, waitSynced, waitFor, withCleanup, ymeshBin, getJson
} from '../lib/node.mjs'

const SECRET = 'interop-shared-secret-for-scoped-tokens'

let node
before(async () => { node = await startNode({ env: { SYNC_SHARED_SECRET: SECRET } }) })
after(async () => { if (node) await node.stop() })

const it = (name, opts, fn) => test(name, opts, withCleanup(() => [node], fn))

/** A token from `ymesh token --room ...` (its last line). */
function mint (args) {
  const out = spawnSync(ymeshBin, ['token', ...args], {
    env: { ...process.env, SYNC_SHARED_SECRET: SECRET },
    encoding: 'utf8'
  })
  assert.equal(out.status, 0, out.stderr)
  return out.stdout.trim().split('\n').pop()
}

it('a read-only viewer stays connected for more than 30 s while its edits are refused', { timeout: 90000 }, async (track) => {
  const room = 'scoped-viewer'
  const writerToken = mint(['--room', room])
  const viewerToken = mint(['--room', room, '--read-only'])
  const writer = track(connect(node.wsUrl, room, { params: { token: writerToken } }))
  await waitSynced(writer.provider)
  writer.doc.getText('t').insert(0, 'from the writer')
  const viewer = track(connect(node.wsUrl, room, { params: { token: viewerToken } }))
  await waitSynced(viewer.provider)
  await waitFor(() => viewer.doc.getText('t').toString() === 'from the writer', 10000, 'the viewer to get the document')
  const disconnects = []
  viewer.provider.on('status', (e) => { if (e.status !== 'connected') disconnects.push(e.status) })
  viewer.doc.getText('t').insert(0, 'viewer edit ')
  // Idle for longer than y-websocket's 30 s message timeout.
  const started = Date.now()
  await waitFor(() => Date.now() - started > 35000, 40000, '35 s to pass', 500)
  assert.deepEqual(disconnects, [], 'the viewer never lost its connection')
  assert.equal(viewer.provider.wsconnected, true)
  // Its edit was never applied; the writer's next one still reaches it.
  writer.doc.getText('t').insert(0, 'more ')
  await waitFor(() => viewer.doc.getText('t').toString().includes('more '), 10000, 'a live update to reach the viewer')
  const doc = await getJson(`${node.url}/rooms/${room}?format=json&token=${writerToken}`)
  assert.equal(doc.body.data.t, 'more from the writer', JSON.stringify(doc.body))
})

it('a token for another room is refused', { timeout: 30000 }, async (track) => {
  const other = mint(['--room', 'some-other-room'])
  const c = track(connect(node.wsUrl, 'scoped-private', { params: { token: other } }))
  const closes = []
  c.provider.on('connection-close', (e) => { if (e) closes.push(e.code) })
  await waitFor(() => closes.includes(4403), 10000, 'a 4403 close')
  assert.equal(c.provider.synced, false)
})
