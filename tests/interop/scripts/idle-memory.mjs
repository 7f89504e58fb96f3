// Memory per idle connection of a running y-websocket server (ymesh or another).
//
//   node scripts/idle-memory.mjs PID PORT PATH_PREFIX CONNECTIONS ROOMS
//
// Opens CONNECTIONS WebSockets over ROOMS rooms (`ws://127.0.0.1:PORT{PATH_PREFIX}/room-N`),
// each sending a SyncStep1 and one awareness state like a stock client, waits until all are
// open plus 3 s, and prints the server's resident memory (VmRSS of PID) before and after.
// Bounded: CONNECTIONS sockets, opened 200 at a time, closed at the end. Linux only.
import fs from 'node:fs'
import WebSocket from 'ws'

const [pid, port, prefix, connections, rooms] = process.argv.slice(2)
if (!rooms) {
  console.error('usage: node scripts/idle-memory.mjs PID PORT PATH_PREFIX CONNECTIONS ROOMS')
  process.exit(2)
}
const n = Number(connections)
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1])
const before = rss()
const sockets = []
let open = 0
let failed = 0
for (let i = 0; i < n; i++) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${prefix}/room-${i % Number(rooms)}`, { perMessageDeflate: false })
  ws.on('open', () => {
    open++
    ws.send(Uint8Array.from([0, 0, 1, 0])) // SyncStep1 with an empty state vector
    const state = Buffer.from('{}')
    const id = 1000 + i // two-byte varUint client id
    const update = [1, (id & 0x7f) | 0x80, id >> 7, 1, state.length, ...state]
    ws.send(Uint8Array.from([1, update.length, ...update]))
  })
  ws.on('message', () => {})
  ws.on('error', () => { failed++ })
  sockets.push(ws)
  if (i % 200 === 199) await new Promise((resolve) => setTimeout(resolve, 50))
}
const deadline = Date.now() + 60000
while (open + failed < n && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100))
await new Promise((resolve) => setTimeout(resolve, 3000))
const after = rss()
console.log(JSON.stringify({
  connections: n, open, failed, rooms: Number(rooms), rss_before_kb: before, rss_after_kb: after,
  kb_per_connection: Number(((after - before) / Math.max(open, 1)).toFixed(2))
}))
for (const s of sockets) s.terminate()
process.exit(0)
