// TLS and live reload with the stock y-websocket client: the node serves wss:// with a
// certificate this test makes (a throwaway CA, tests/fixtures/gen-cert.sh), two stock
// clients sync through it, and a reload that changes the token closes the connected client
// holding the old one with 4401 while a client with the new token gets in.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import {
  startNode, connect, waitSynced, waitFor, withCleanup, WebSocket, makeDataDir, removeDataDir,
  repoRoot
} from '../lib/node.mjs'

const FIRST = 'interop-first-token-0b5e2c7d1f'
const SECOND = 'interop-second-token-8a4c6e2b90'
const ADMIN = 'interop-admin-token-3f9d1a7c55'

let node
let dir
let ca
let config

function writeConfig (token) {
  fs.writeFileSync(config, [
    `token = "${token}"`,
    `admin_token = "${ADMIN}"`,
    `tls_cert = "${path.join(dir, 'cert.pem')}"`,
    `tls_key = "${path.join(dir, 'key.pem')}"`,
    ''
  ].join('\n'))
}

/** The stock `ws` WebSocket, trusting the test CA (as a browser trusts a real one). */
class TrustingWebSocket extends WebSocket {
  constructor (url, protocols) {
    super(url, protocols, { ca })
  }
}

/** One HTTPS request to the node, trusting the test CA; resolves {status, body}. */
function request (method, p, token) {
  return new Promise((resolve, reject) => {
    const req = https.request(`${node.url}${p}`, {
      method, ca, headers: { authorization: `Bearer ${token}` }, timeout: 10000
    }, (res) => {
      let text = ''
      res.on('data', (c) => { text += c })
      res.on('end', () => {
        let body = text
        try { body = JSON.parse(text) } catch {}
        resolve({ status: res.statusCode, body })
      })
    })
    req.on('timeout', () => req.destroy(new Error(`${method} ${p} timed out`)))
    req.on('error', reject)
    req.end()
  })
}

before(async () => {
  dir = makeDataDir()
  const gen = spawnSync('bash', [path.join(repoRoot, 'tests/fixtures/gen-cert.sh'), dir], { encoding: 'utf8' })
  assert.equal(gen.status, 0, gen.stderr)
  ca = fs.readFileSync(path.join(dir, 'ca.pem'))
  config = path.join(dir, 'mesh.toml')
  writeConfig(FIRST)
  node = await startNode({ args: ['--config', config] })
})
after(async () => {
  if (node) await node.stop()
  removeDataDir(dir)
})

const it = (name, opts, fn) => test(name, opts, withCleanup(() => [node], fn))

it('stock clients sync over wss:// and a reload revokes the old token of a connected client', { timeout: 60000 }, async (track) => {
  assert.match(node.url, /^https:/)
  const room = 'tls-room'
  const opts = (token) => ({ WebSocketPolyfill: TrustingWebSocket, params: { token } })
  const a = track(connect(node.wsUrl, room, opts(FIRST)))
  await waitSynced(a.provider)
  a.doc.getText('t').insert(0, 'over wss')
  const b = track(connect(node.wsUrl, room, opts(FIRST)))
  await waitSynced(b.provider)
  await waitFor(() => b.doc.getText('t').toString() === 'over wss', 10000, 'the edit to cross')

  const closes = []
  a.provider.on('connection-close', (e) => { if (e) closes.push({ code: e.code, reason: e.reason }) })
  writeConfig(SECOND)
  const reload = await request('POST', '/reload', ADMIN)
  assert.equal(reload.status, 200, JSON.stringify(reload.body))
  assert.deepEqual(reload.body.data.applied, ['token'])
  assert.equal(reload.body.data.closed_clients, 2)
  await waitFor(() => closes.some((c) => c.code === 4401), 10000, 'a 4401 close for the old token')
  assert.match(closes.find((c) => c.code === 4401).reason, /reload/)

  const c = track(connect(node.wsUrl, room, opts(SECOND)))
  await waitSynced(c.provider)
  await waitFor(() => c.doc.getText('t').toString() === 'over wss', 10000, 'the new client to get the document')
  const rooms = await request('GET', '/rooms', SECOND)
  assert.equal(rooms.status, 200)
  const old = await request('GET', '/rooms', FIRST)
  assert.equal(old.status, 401)
})
