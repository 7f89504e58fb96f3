// The committed reference frames are current, and the node accepts them byte for byte.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  Y, startNode, connect, waitSynced, waitFor, withCleanup, rawSocket, frameKind,
  canonicalJson, withTimeout
} from '../lib/node.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const fixturesFile = path.resolve(here, '../../fixtures/y-protocols-frames.json')
const fixtures = JSON.parse(fs.readFileSync(fixturesFile, 'utf8'))
const bytes = (h) => new Uint8Array(Buffer.from(h, 'hex'))
const byName = (n) => fixtures.find((f) => f.name === n)

let node
before(async () => { node = await startNode() })
after(async () => { if (node) await node.stop() })

const it = (name, opts, fn) => test(name, opts, withCleanup(() => [node], fn))

test('tests/fixtures/y-protocols-frames.json is what make-fixtures.mjs generates', { timeout: 30000 }, async () => {
  const script = path.resolve(here, '../scripts/make-fixtures.mjs')
  await withTimeout(new Promise((resolve, reject) => {
    execFile(process.execPath, [script, '--check'], { timeout: 25000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`make-fixtures --check failed: ${stderr || stdout || err.message}`))
      else resolve()
    })
  }), 30000, 'make-fixtures --check')
})

/** Opens a raw socket on a fresh room and waits for the node's first frame. */
async function joined (track, room) {
  const s = track(rawSocket(`${node.wsUrl}/${encodeURIComponent(room)}`))
  await s.waitOpen()
  await s.waitMessage(() => true, 5000, 0, 'the node\'s first frame')
  return s
}

const docFixtures = fixtures.filter((f) => (f.type === 'sync_step2' || f.type === 'sync_update') && (f.text || f.map))
for (const f of docFixtures) {
  it(`the node applies reference frame ${f.name}`, { timeout: 20000 }, async (track) => {
    const room = `fx-${f.name}`
    const observer = track(connect(node.wsUrl, encodeURIComponent(room)))
    await waitSynced(observer.provider)
    const s = await joined(track, room)
    if (f.base) s.send(bytes(byName(f.base).frame))
    s.send(bytes(f.frame))
    const expected = canonicalJson({ text: f.text || {}, map: f.map || {} })
    const actual = () => canonicalJson({
      text: Object.fromEntries(Object.keys(f.text || {}).map((k) => [k, observer.doc.getText(k).toString()])),
      map: Object.fromEntries(Object.keys(f.map || {}).map((k) => [k, observer.doc.getMap(k).toJSON()]))
    })
    await waitFor(() => actual() === expected, 5000, () => `observer content ${actual()} to equal ${expected}`)
    for (const c of f.client_ids || []) assert.ok(Y.decodeStateVector(Y.encodeStateVector(observer.doc)).has(c), `client ${c} in state vector`)
    assert.equal(s.closed, null)
  })
}

it('the node answers every reference SyncStep1 with a SyncStep2', { timeout: 20000 }, async (track) => {
  const s = await joined(track, 'fx-step1')
  for (const f of fixtures.filter((x) => x.type === 'sync_step1')) {
    const mark = s.messages.length
    s.send(bytes(f.frame))
    await s.waitMessage((m) => frameKind(m)[0] === 0 && frameKind(m)[1] === 1, 5000, mark, `SyncStep2 for ${f.name}`)
  }
  assert.equal(s.closed, null)
})

it('reference awareness frames reach stock clients; QueryAwareness and SYNC_STATUS frames are answered', { timeout: 20000 }, async (track) => {
  const room = 'fx-awareness'
  const observer = track(connect(node.wsUrl, room))
  await waitSynced(observer.provider)
  const s = await joined(track, room)
  const aw = fixtures.filter((f) => f.type === 'awareness')
  for (const f of aw) s.send(bytes(f.frame))
  // A stock Awareness applies a state only if its clock is above 0 (what it assumes for an
  // unknown client), so only those can be observed.
  const visible = aw.flatMap((f) => f.entries).filter((e) => e.state !== null && e.clock > 0)
  assert.ok(visible.length >= 2)
  await waitFor(() => visible.every((e) => canonicalJson(observer.awareness.getStates().get(e.client)) === canonicalJson(JSON.parse(e.state))),
    5000, 'the observer to see the fixture awareness states')
  for (const e of aw.flatMap((f) => f.entries).filter((e) => e.state === null)) {
    assert.ok(!observer.awareness.getStates().has(e.client), `removed client ${e.client} is absent`)
  }

  let mark = s.messages.length
  s.send(bytes(byName('query_awareness').frame))
  await s.waitMessage((m) => m[0] === 1, 5000, mark, 'an awareness frame answering QueryAwareness')

  // SYNC_STATUS (102) is echoed unchanged to its sender (ARCHITECTURE.md wire numbers).
  for (const f of fixtures.filter((x) => x.type === 'sync_status')) {
    mark = s.messages.length
    s.send(bytes(f.frame))
    await s.waitMessage((m) => Buffer.from(m).toString('hex') === f.frame, 5000, mark, `echo of ${f.name}`)
  }
  assert.equal(s.closed, null)
  // The sender leaving removes its awareness states everywhere.
  s.terminate()
  await waitFor(() => visible.every((e) => !observer.awareness.getStates().has(e.client)), 8000,
    'the fixture awareness states to be removed after the sender left')
})
