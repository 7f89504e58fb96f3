// The page of test/browser.test.mjs, bundled for Chromium by esbuild (the test builds it).
//
// The stock y-websocket provider and yjs, as a web app would ship them. The page exposes
// `window.ymesh` for the test to drive through Playwright; every call records what happened
// in plain objects the test reads back with `page.evaluate`.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const sessions = new Map()

/** A v1 update holding one Y.Text 't' with `text`. */
function textUpdate (text) {
  const doc = new Y.Doc()
  doc.getText('t').insert(0, text)
  return Y.encodeStateAsUpdate(doc)
}

/** varUint (lib0 encoding) of a non-negative integer. */
function varUint (n) {
  const out = []
  while (n > 0x7f) {
    out.push(0x80 | (n & 0x7f))
    n = Math.floor(n / 128)
  }
  out.push(n)
  return out
}

window.ymesh = {
  /**
   * Connects a stock WebsocketProvider to `serverUrl/room` and inserts `text` into Y.Text
   * 't' as soon as the socket opens (so the edit is on the wire at once, before any sync).
   * State is read with `session(id)`.
   */
  connect (id, serverUrl, room, text) {
    const doc = new Y.Doc()
    const provider = new WebsocketProvider(serverUrl, room, doc, { disableBc: true })
    const s = {
      statuses: [],
      synced: false,
      messagesReceived: 0,
      // Every close the provider saw: {code, reason}; `terminal` is y-websocket's 'closed'
      // event (a 4400-4499 code: it does not reconnect).
      closes: [],
      terminal: null,
      errors: 0
    }
    sessions.set(id, { doc, provider, s })
    let edited = false
    provider.on('status', ({ status }) => {
      s.statuses.push(status)
      if (status === 'connected' && !edited) {
        edited = true
        doc.getText('t').insert(0, text)
        // Count what the node sends on this socket (sync messages among them).
        const ws = provider.ws
        ws.addEventListener('message', () => { s.messagesReceived++ })
      }
    })
    provider.on('sync', (synced) => { if (synced) s.synced = true })
    provider.on('connection-close', (event) => {
      s.closes.push(event ? { code: event.code, reason: event.reason } : { code: null, reason: 'closed locally' })
    })
    provider.on('closed', ({ code, reason }) => { s.terminal = { code, reason } })
    provider.on('connection-error', () => { s.errors++ })
  },

  /** What a session made by `connect` saw, plus its current text. */
  session (id) {
    const { doc, s } = sessions.get(id)
    return { ...s, text: doc.getText('t').toString() }
  },

  /** Destroys every provider (so no socket outlives the test's page). */
  destroyAll () {
    for (const { provider, doc } of sessions.values()) {
      provider.destroy()
      doc.destroy()
    }
    sessions.clear()
  },

  /**
   * A hand-written client: a raw WebSocket that sends a sync update (type 0, subtype 2)
   * carrying `text` the moment it opens, without waiting for anything. Resolves when the
   * socket closes, or after `ms`, with what it saw.
   */
  rawWrite (url, text, ms) {
    return new Promise((resolve) => {
      const seen = { opened: false, messageTypes: [], close: null }
      const ws = new WebSocket(url)
      ws.binaryType = 'arraybuffer'
      const timer = setTimeout(() => { ws.close(); resolve(seen) }, ms)
      ws.onopen = () => {
        seen.opened = true
        const update = textUpdate(text)
        ws.send(new Uint8Array([0, 2, ...varUint(update.length), ...update]))
      }
      ws.onmessage = (e) => { seen.messageTypes.push(new Uint8Array(e.data)[0]) }
      ws.onclose = (e) => {
        clearTimeout(timer)
        seen.close = { code: e.code, reason: e.reason }
        resolve(seen)
      }
    })
  },

  /**
   * Cross-site "simple" requests (no preflight: POST, Content-Type text/plain, no-cors), as
   * any web page can send them. The responses are opaque to the page; the test reads their
   * statuses from the browser's network events.
   */
  async simplePosts (nodeUrl, room, text) {
    const post = (path, body) => fetch(nodeUrl + path, {
      method: 'POST',
      mode: 'no-cors',
      headers: { 'Content-Type': 'text/plain' },
      body
    }).then(() => 'sent', (e) => `failed: ${e.message}`)
    return {
      command: await post('/commands', '{"kind":"compact"}'),
      update: await post('/rooms/' + encodeURIComponent(room), textUpdate(text))
    }
  },

  /** A same-origin `GET path` from the page's script: {status, body}. */
  async read (path) {
    const res = await fetch(path)
    return { status: res.status, body: await res.text() }
  }
}
