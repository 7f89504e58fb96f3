// A foreign y-websocket server as a peer: the JavaScript reference server
// (@y/websocket-server 0.1.1) cannot list its rooms, so each ymesh node replicates the rooms
// configured for it ([[peers]] rooms = [...]) as a plain y-websocket client of
// `URL/{room}`. Two ymesh nodes that both point at it replicate a named room through it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startNode, connect, waitSynced, waitFor, destroyAll, makeDataDir, removeDataDir } from '../lib/node.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const serverJs = path.join(here, '..', 'node_modules', '@y', 'websocket-server', 'src', 'server.js')

async function freePort () {
  return await new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/** Starts the reference server on 127.0.0.1 and waits for its "running at" line. */
async function startReference () {
  const port = await freePort()
  const proc = spawn(process.execPath, [serverJs], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  proc.stdout.on('data', (d) => { out += d })
  proc.stderr.on('data', (d) => { out += d })
  await waitFor(() => out.includes('running at'), 10000, () => `reference server to start: ${out}`)
  return { port, proc, log: () => out }
}

test('two ymesh nodes replicate a configured room through the reference y-websocket server', { timeout: 60000 }, async () => {
  const ref = await startReference()
  const dirs = [makeDataDir(), makeDataDir()]
  const nodes = []
  const clients = []
  try {
    for (const dir of dirs) {
      const cfg = path.join(dir, 'peers.toml')
      fs.writeFileSync(cfg, `[[peers]]\nurl = "ws://127.0.0.1:${ref.port}"\nrooms = ["shared"]\n`)
      nodes.push(await startNode({ args: ['--config', cfg], dataDir: dir }))
    }
    const [a, b] = nodes
    // Both nodes show the reference server as a connected peer, with the room.
    for (const n of nodes) {
      await waitFor(async () => {
        const { body } = await n.getJson('/peers')
        return body.data[0]?.state === 'connected'
      }, 15000, 'the reference server linked')
    }
    const onA = connect(a.wsUrl, 'shared')
    const onB = connect(b.wsUrl, 'shared')
    const elsewhere = connect(a.wsUrl, 'not-listed')
    clients.push(onA, onB, elsewhere)
    await Promise.all([waitSynced(onA.provider), waitSynced(onB.provider), waitSynced(elsewhere.provider)])
    onA.doc.getText('t').insert(0, 'from A via the reference server')
    await waitFor(() => onB.doc.getText('t').toString() === 'from A via the reference server', 15000,
      () => `A's edit on B (B has ${JSON.stringify(onB.doc.getText('t').toString())})`)
    onB.doc.getMap('m').set('b', 'from B')
    await waitFor(() => onA.doc.getMap('m').get('b') === 'from B', 15000, "B's edit on A")
    // A room that is not configured for the foreign peer stays on its node.
    elsewhere.doc.getText('t').insert(0, 'private')
    await waitFor(async () => (await a.getJson('/rooms/not-listed?format=json')).status === 200, 5000, 'room on A')
    const deadline = Date.now() + 1500
    while (Date.now() < deadline) {
      const { status } = await b.getJson('/rooms/not-listed')
      assert.equal(status, 404, 'an unlisted room does not cross')
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const { body } = await a.getJson('/peers')
    assert.deepEqual(body.data[0].rooms.map((r) => r.name), ['shared'], JSON.stringify(body))
  } catch (e) {
    e.message += `\n--- reference server ---\n${ref.log()}\n` + nodes.map((n) => `--- node ${n.port} ---\n${n.logsTail(40)}`).join('\n')
    throw e
  } finally {
    destroyAll(clients)
    for (const n of nodes) await n.kill()
    ref.proc.kill('SIGKILL')
    for (const d of dirs) removeDataDir(d)
  }
})
