#!/usr/bin/env node
// A small Node.js client for a ymesh node (any y-websocket server works the same way).
//
// It joins a room, prints the shared Y.Text "content" whenever it changes, and appends a
// timestamped line to it every few seconds and for every line you type on stdin.
// Ctrl-C (or SIGTERM) disconnects and exits.
//
// Run (from this directory, with a node listening, e.g. `ymesh serve`):
//
//   npm ci
//   node node-client.mjs                                   # ws://127.0.0.1:3913/rooms, room "demo"
//   node node-client.mjs ws://127.0.0.1:3913/rooms notes   # server URL and room from argv
//   YMESH_URL=ws://10.0.0.5:3913/rooms YMESH_ROOM=notes node node-client.mjs
//   YMESH_INTERVAL=0 node node-client.mjs                  # no timer: only stdin lines
//
// Arguments / environment:
//   argv[2] or YMESH_URL        server URL without the room (default ws://127.0.0.1:3913/rooms);
//                               the room is appended as one path segment
//   argv[3] or YMESH_ROOM       room name (default "demo"; percent-encoded into the URL)
//   YMESH_INTERVAL              seconds between automatic lines (default 5; 0 disables them)
//   YMESH_NAME                  name written in each line (default "node-<pid>")
//
// Status messages go to stderr; the document's content goes to stdout.

import * as readline from 'node:readline'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const serverUrl = (process.argv[2] || process.env.YMESH_URL || 'ws://127.0.0.1:3913/rooms').replace(/\/+$/, '')
const room = process.argv[3] || process.env.YMESH_ROOM || 'demo'
const intervalSec = Number(process.env.YMESH_INTERVAL ?? 5)
const name = process.env.YMESH_NAME || `node-${process.pid}`

if (!Number.isFinite(intervalSec) || intervalSec < 0) {
  console.error(`YMESH_INTERVAL must be a number of seconds >= 0, got ${JSON.stringify(process.env.YMESH_INTERVAL)}`)
  process.exit(2)
}

const doc = new Y.Doc()
const content = doc.getText('content')

// The provider appends `/${room}` to the URL as given, so encode the room name here.
const provider = new WebsocketProvider(serverUrl, encodeURIComponent(room), doc, {
  WebSocketPolyfill: WebSocket, // Node 20 has no global WebSocket
  disableBc: true // BroadcastChannel sharing is a browser-tab feature
})
provider.awareness.setLocalStateField('user', { name })

const log = (msg) => console.error(`[${new Date().toISOString()}] ${msg}`)
log(`connecting to ${serverUrl}/${encodeURIComponent(room)} as ${name}`)

provider.on('status', ({ status }) => log(`status: ${status}`))
provider.on('sync', (synced) => {
  if (synced) {
    log(`synced (${content.length} chars)`)
    printContent()
  }
})
provider.on('connection-error', () => log('connection error (the provider retries with back-off)'))

function printContent () {
  const text = content.toString()
  process.stdout.write(`--- content (${text.length} chars) ---\n${text}${text.endsWith('\n') || text === '' ? '' : '\n'}---\n`)
}

// Print on every change, local or remote; skip the changes the first sync brings in (the
// 'sync' handler prints once after it).
content.observe(() => {
  if (provider.synced) printContent()
})

// Lines written before the first sync wait for it: until then the local text is empty, and
// "the end" would be the start of the room's text.
const pending = []
function appendLine (text) {
  const line = `${new Date().toISOString()} ${name}: ${text}\n`
  if (!provider.synced) {
    pending.push(line)
    return
  }
  doc.transact(() => content.insert(content.length, line))
}
provider.on('sync', (synced) => {
  if (synced && pending.length) {
    const lines = pending.splice(0).join('')
    doc.transact(() => content.insert(content.length, lines))
  }
})

let counter = 0
const timer = intervalSec > 0
  ? setInterval(() => appendLine(`tick ${++counter}`), intervalSec * 1000)
  : null

const rl = readline.createInterface({ input: process.stdin, terminal: false })
rl.on('line', (line) => {
  if (line.trim() !== '') appendLine(line)
})

let stopping = false
function stop (signal) {
  if (stopping) return
  stopping = true
  log(`${signal}: disconnecting`)
  if (timer) clearInterval(timer)
  rl.close()
  // Updates are sent as they happen; destroy() closes the socket after them. Wait (briefly)
  // for the close handshake so nothing queued is cut off, then exit.
  const ws = provider.ws
  provider.destroy()
  doc.destroy()
  const exit = () => process.exit(0)
  if (ws && ws.readyState !== WebSocket.CLOSED) {
    ws.addEventListener('close', exit)
    setTimeout(exit, 2000).unref()
  } else {
    exit()
  }
}
process.on('SIGINT', () => stop('SIGINT'))
process.on('SIGTERM', () => stop('SIGTERM'))
