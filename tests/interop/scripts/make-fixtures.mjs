#!/usr/bin/env node
// Generates tests/fixtures/y-protocols-frames.json: byte-exact reference WebSocket frames
// produced by the real yjs / y-protocols / lib0 encoders (the versions pinned in
// tests/interop/package-lock.json).
//
// Deterministic: every Y.Doc gets a fixed clientID before any edit, awareness clocks are set
// explicitly, and nothing depends on time or randomness. Running this twice gives the same file.
//
// Usage (from tests/interop):  npm ci && node scripts/make-fixtures.mjs [--check]
//   --check  regenerate in memory and exit 1 if the committed file differs.

import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as authProtocol from 'y-protocols/auth'

const here = path.dirname(fileURLToPath(import.meta.url))
const outFile = path.resolve(here, '../../fixtures/y-protocols-frames.json')

// Top-level message types (ARCHITECTURE.md "Wire numbers").
const MSG_SYNC = 0
const MSG_AWARENESS = 1
const MSG_AUTH = 2
const MSG_QUERY_AWARENESS = 3
const MSG_SYNC_STATUS = 102
const MSG_COMMAND = 103

const hex = (u8) => Buffer.from(u8).toString('hex')
const fromHex = (h) => new Uint8Array(Buffer.from(h, 'hex'))

const assert = (cond, msg) => {
  if (!cond) throw new Error('fixture self-check failed: ' + msg)
}

/** A doc with a fixed client id. Yjs only reads doc.clientID when it creates items. */
const newDoc = (clientID) => {
  const doc = new Y.Doc({ gc: true })
  doc.clientID = clientID
  return doc
}

/** Plain-JSON description of the root types a fixture doc uses. */
const describe = (doc, textNames = [], mapNames = []) => {
  const out = {}
  if (textNames.length > 0) {
    out.text = {}
    for (const n of textNames) out.text[n] = doc.getText(n).toString()
  }
  if (mapNames.length > 0) {
    out.map = {}
    for (const n of mapNames) out.map[n] = doc.getMap(n).toJSON()
  }
  return out
}

const frameOf = (write) => {
  const enc = encoding.createEncoder()
  write(enc)
  return encoding.toUint8Array(enc)
}

const fixtures = []

// ---------------------------------------------------------------------------------------------
// sync: step1 / step2 / update

const syncStep1 = (name, doc, extra = {}) => {
  const frame = frameOf((enc) => {
    encoding.writeVarUint(enc, MSG_SYNC)
    syncProtocol.writeSyncStep1(enc, doc)
  })
  fixtures.push({ name, type: 'sync_step1', frame: hex(frame), payload: hex(Y.encodeStateVector(doc)), ...extra })
}

const syncStep2 = (name, doc, extra = {}) => {
  const frame = frameOf((enc) => {
    encoding.writeVarUint(enc, MSG_SYNC)
    syncProtocol.writeSyncStep2(enc, doc)
  })
  fixtures.push({ name, type: 'sync_step2', frame: hex(frame), payload: hex(Y.encodeStateAsUpdate(doc)), ...extra })
}

const syncUpdate = (name, update, extra = {}) => {
  const frame = frameOf((enc) => {
    encoding.writeVarUint(enc, MSG_SYNC)
    syncProtocol.writeUpdate(enc, update)
  })
  fixtures.push({ name, type: 'sync_update', frame: hex(frame), payload: hex(update), ...extra })
}

/** Runs `edit` on `doc` in one transaction and returns the single v1 update it emitted. */
const captureUpdate = (doc, edit) => {
  const updates = []
  const h = (u) => updates.push(u)
  doc.on('update', h)
  doc.transact(() => edit(doc))
  doc.off('update', h)
  assert(updates.length === 1, `expected one update, got ${updates.length}`)
  return updates[0]
}

{
  // Empty doc.
  const empty = newDoc(1)
  syncStep1('sync_step1_empty_doc', empty, { text: {} })
  syncStep2('sync_step2_empty_doc', empty, { text: {} })
}

{
  // Y.Text "t" = "hello" (client 1) and Y.Map "m" entries (client 2): two entries in the
  // state vector.
  const a = newDoc(1)
  a.getText('t').insert(0, 'hello')
  const b = newDoc(2)
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a))
  b.transact(() => {
    b.getMap('m').set('k', 'v')
    b.getMap('m').set('n', 42)
  })
  const d = describe(b, ['t'], ['m'])
  syncStep1('sync_step1_hello_text_and_map', b, d)
  syncStep2('sync_step2_hello_text_and_map', b, d)

  // The same content as one incremental update made by a single client in one transaction.
  const c = newDoc(3)
  const u = captureUpdate(c, (doc) => {
    doc.getText('t').insert(0, 'hello')
    doc.getMap('m').set('k', 'v')
  })
  syncUpdate('sync_update_hello_text_and_map', u, describe(c, ['t'], ['m']))
}

{
  // An incremental update that applies on top of sync_update_hello_text_and_map (same client,
  // next clock): append " world" to "hello". `base` names the fixture to apply first.
  const c = newDoc(3)
  c.transact(() => {
    c.getText('t').insert(0, 'hello')
    c.getMap('m').set('k', 'v')
  })
  const u = captureUpdate(c, (doc) => doc.getText('t').insert(5, ' world'))
  syncUpdate('sync_update_append_world', u, { base: 'sync_update_hello_text_and_map', ...describe(c, ['t'], ['m']) })
}

{
  // An update larger than 200 bytes: the varUint8Array length prefix takes two bytes, and so
  // does the string length inside the update.
  const doc = newDoc(7)
  const phrase = 'The quick brown fox jumps over the lazy dog. '
  const s = phrase.repeat(8) // 360 chars
  const u = captureUpdate(doc, (d) => d.getText('t').insert(0, s))
  assert(u.length > 200, 'large update is > 200 bytes')
  syncUpdate('sync_update_large_text', u, describe(doc, ['t']))
  syncStep2('sync_step2_large_text', doc, describe(doc, ['t']))
}

{
  // Non-ASCII text: Yjs counts UTF-16 units, the wire carries UTF-8.
  const doc = newDoc(8)
  const u = captureUpdate(doc, (d) => d.getText('t').insert(0, 'Grüße, 世界! 🚀'))
  syncUpdate('sync_update_unicode_text', u, describe(doc, ['t']))
}

{
  // Client ids above 2^32 (Yjs allows up to 2^53 - 1 through lib0's varUint).
  const big = 4294967297 + 12345 // 2^32 + 1 + 12345
  const doc = newDoc(big)
  doc.getText('t').insert(0, 'big client')
  const d = { client_ids: [big], ...describe(doc, ['t']) }
  syncStep1('sync_step1_client_id_over_2_32', doc, d)
  syncStep2('sync_step2_client_id_over_2_32', doc, d)

  const max = Number.MAX_SAFE_INTEGER // 2^53 - 1
  const doc2 = newDoc(max)
  doc2.getText('t').insert(0, 'max')
  const d2 = { client_ids: [max], ...describe(doc2, ['t']) }
  syncStep1('sync_step1_client_id_2_53_minus_1', doc2, d2)
  syncStep2('sync_step2_client_id_2_53_minus_1', doc2, d2)
}

// ---------------------------------------------------------------------------------------------
// awareness

/**
 * Encodes an awareness update with the real encoder. The Awareness meta map is set by hand so
 * that clocks are fixed (Awareness normally stamps lastUpdated with the wall clock, but that is
 * never encoded, and the clock is all that travels).
 *
 * @param {Array<{client:number, clock:number, state:any}>} entries state null = removed
 */
const awarenessFixture = (name, entries) => {
  const doc = newDoc(999999)
  const awareness = new awarenessProtocol.Awareness(doc)
  clearInterval(awareness._checkInterval) // no timer: this script must exit on its own
  const states = new Map()
  for (const e of entries) {
    awareness.meta.set(e.client, { clock: e.clock, lastUpdated: 0 })
    if (e.state !== null) states.set(e.client, e.state)
  }
  const update = awarenessProtocol.encodeAwarenessUpdate(awareness, entries.map((e) => e.client), states)
  const frame = frameOf((enc) => {
    encoding.writeVarUint(enc, MSG_AWARENESS)
    encoding.writeVarUint8Array(enc, update)
  })
  fixtures.push({
    name,
    type: 'awareness',
    frame: hex(frame),
    payload: hex(update),
    entries: entries.map((e) => ({ client: e.client, clock: e.clock, state: e.state === null ? null : JSON.stringify(e.state) }))
  })
}

awarenessFixture('awareness_two_entries_one_removed', [
  { client: 10, clock: 3, state: { user: { name: 'alice', color: '#ff8800' }, cursor: { anchor: 4, head: 9 } } },
  { client: 11, clock: 300, state: null }
])
awarenessFixture('awareness_unicode_state', [
  { client: 12, clock: 1, state: { user: { name: 'Zoë 🚀 李小龍', color: '#00aaff' }, note: 'naïve café — “quoted”' } }
])
awarenessFixture('awareness_client_id_over_2_32', [
  { client: 4294967297 + 12345, clock: 0, state: { user: { name: 'big' } } }
])
awarenessFixture('awareness_empty_update', [])

// ---------------------------------------------------------------------------------------------
// auth (y-protocols flavour: sub 0 = permission denied + reason)

const authDenied = (name, reason) => {
  const frame = frameOf((enc) => {
    encoding.writeVarUint(enc, MSG_AUTH)
    authProtocol.writePermissionDenied(enc, reason)
  })
  fixtures.push({ name, type: 'auth_denied', frame: hex(frame), reason })
}
authDenied('auth_denied_ascii', 'unauthorized')
authDenied('auth_denied_unicode', 'Zugriff verweigert — 拒绝访问 🔒')

// ---------------------------------------------------------------------------------------------
// query awareness (no body)

fixtures.push({
  name: 'query_awareness',
  type: 'query_awareness',
  frame: hex(frameOf((enc) => encoding.writeVarUint(enc, MSG_QUERY_AWARENESS)))
})

// ---------------------------------------------------------------------------------------------
// sync status (102, y-sweet style): varUint(102) · varUint8Array(varUint(localVersion))

const syncStatus = (name, version) => {
  const inner = frameOf((enc) => encoding.writeVarUint(enc, version))
  const frame = frameOf((enc) => {
    encoding.writeVarUint(enc, MSG_SYNC_STATUS)
    encoding.writeVarUint8Array(enc, inner)
  })
  fixtures.push({ name, type: 'sync_status', frame: hex(frame), payload: hex(inner), version })
}
syncStatus('sync_status_version_0', 0)
syncStatus('sync_status_version_300', 300)

// ---------------------------------------------------------------------------------------------
// maintenance command (103): varUint(103) · varUint(subtype) · varString(json)

const command = (name, subtype, obj) => {
  const json = JSON.stringify(obj)
  const frame = frameOf((enc) => {
    encoding.writeVarUint(enc, MSG_COMMAND)
    encoding.writeVarUint(enc, subtype)
    encoding.writeVarString(enc, json)
  })
  fixtures.push({ name, type: 'command', frame: hex(frame), subtype, json })
}
// Documents of the shape docs/protocol.md section 5.2 gives (field order as the node writes).
const origin = '12D3KooWExampleNode'
command('command_compact', 0, {
  id: 'xampleNode-b1-1', kind: 'compact', room: 'notes', args: {}, origin, boot: 'b1', seq: 1, issued_ms: 1000, deadline_ms: 31000, hops: 0
})
command('command_result_compact', 1, {
  id: 'xampleNode-b1-1', responder: '42', responder_kind: 'client', room: 'notes', status: 'ok', detail: { compacted: 42 }, at_ms: 1500
})
command('command_migrate_unicode', 0, {
  id: 'xampleNode-b1-2', kind: 'migrate', room: 'café/日本', args: { version: 2 }, origin, boot: 'b1', seq: 2, issued_ms: 2000, deadline_ms: 32000, hops: 1
})

// ---------------------------------------------------------------------------------------------
// Self-check: decode every frame with lib0 and compare with the declared fields.

const docFromFixture = (f) => {
  const doc = new Y.Doc()
  if (f.base) {
    const base = fixtures.find((x) => x.name === f.base)
    assert(base, `base ${f.base} exists`)
    Y.applyUpdate(doc, fromHex(base.payload))
  }
  Y.applyUpdate(doc, fromHex(f.payload))
  return doc
}

for (const f of fixtures) {
  assert(!/[A-F]/.test(f.frame), `${f.name}: lowercase hex`)
  const dec = decoding.createDecoder(fromHex(f.frame))
  const type = decoding.readVarUint(dec)
  switch (f.type) {
    case 'sync_step1':
    case 'sync_step2':
    case 'sync_update': {
      assert(type === MSG_SYNC, `${f.name}: type 0`)
      const sub = decoding.readVarUint(dec)
      assert(sub === { sync_step1: 0, sync_step2: 1, sync_update: 2 }[f.type], `${f.name}: subtype`)
      const payload = decoding.readVarUint8Array(dec)
      assert(hex(payload) === f.payload, `${f.name}: payload`)
      if (f.type === 'sync_step1') {
        const sv = Y.decodeStateVector(payload)
        for (const c of f.client_ids || []) assert(sv.has(c), `${f.name}: sv has ${c}`)
      } else {
        const doc = docFromFixture(f)
        for (const [k, v] of Object.entries(f.text || {})) assert(doc.getText(k).toString() === v, `${f.name}: text ${k}`)
        for (const [k, v] of Object.entries(f.map || {})) assert(JSON.stringify(doc.getMap(k).toJSON()) === JSON.stringify(v), `${f.name}: map ${k}`)
      }
      break
    }
    case 'awareness': {
      assert(type === MSG_AWARENESS, `${f.name}: type 1`)
      const payload = decoding.readVarUint8Array(dec)
      assert(hex(payload) === f.payload, `${f.name}: payload`)
      const a = decoding.createDecoder(payload)
      const n = decoding.readVarUint(a)
      assert(n === f.entries.length, `${f.name}: entry count`)
      for (const e of f.entries) {
        assert(decoding.readVarUint(a) === e.client, `${f.name}: client`)
        assert(decoding.readVarUint(a) === e.clock, `${f.name}: clock`)
        const s = decoding.readVarString(a)
        assert(s === (e.state === null ? 'null' : e.state), `${f.name}: state`)
      }
      assert(!decoding.hasContent(a), `${f.name}: no trailing awareness bytes`)
      break
    }
    case 'auth_denied':
      assert(type === MSG_AUTH, `${f.name}: type 2`)
      assert(decoding.readVarUint(dec) === 0, `${f.name}: sub 0`)
      assert(decoding.readVarString(dec) === f.reason, `${f.name}: reason`)
      break
    case 'query_awareness':
      assert(type === MSG_QUERY_AWARENESS, `${f.name}: type 3`)
      break
    case 'sync_status': {
      assert(type === MSG_SYNC_STATUS, `${f.name}: type 102`)
      const inner = decoding.readVarUint8Array(dec)
      assert(hex(inner) === f.payload, `${f.name}: payload`)
      assert(decoding.readVarUint(decoding.createDecoder(inner)) === f.version, `${f.name}: version`)
      break
    }
    case 'command':
      assert(type === MSG_COMMAND, `${f.name}: type 103`)
      assert(decoding.readVarUint(dec) === f.subtype, `${f.name}: subtype`)
      assert(decoding.readVarString(dec) === f.json, `${f.name}: json`)
      break
    default:
      throw new Error(`unknown fixture type ${f.type}`)
  }
  assert(!decoding.hasContent(dec), `${f.name}: no trailing bytes`)
}

const names = new Set(fixtures.map((f) => f.name))
assert(names.size === fixtures.length, 'fixture names are unique')

// One object per line keeps diffs readable.
const out = '[\n' + fixtures.map((f) => '  ' + JSON.stringify(f)).join(',\n') + '\n]\n'

if (process.argv.includes('--check')) {
  const current = fs.existsSync(outFile) ? fs.readFileSync(outFile, 'utf8') : ''
  if (current !== out) {
    console.error(`${outFile} is out of date; run: node scripts/make-fixtures.mjs`)
    process.exit(1)
  }
  console.log(`${outFile} is up to date (${fixtures.length} fixtures)`)
} else {
  fs.mkdirSync(path.dirname(outFile), { recursive: true })
  fs.writeFileSync(outFile, out)
  console.log(`wrote ${fixtures.length} fixtures to ${outFile}`)
}
