// Browser origins and hosts (docs: ARCHITECTURE "Origins" and "Hosts"), in a real browser.
//
// Debian's Chromium (/usr/bin/chromium, headless) is driven by playwright-core and runs the
// stock yjs + y-websocket client, bundled for the page by esbuild from lib/browser-page.mjs
// and served by a tiny static server on 127.0.0.1. Chromium resolves the foreign test host
// name `evil.test` to 127.0.0.1 (--host-resolver-rules), so the same static server is both a
// trusted loopback origin (http://127.0.0.1:P, http://localhost:P) and a foreign web site
// (http://evil.test:P), and the node itself can be reached under a foreign Host name, as after
// a DNS rebinding.
//
// What the node must do (the expectations, one test each):
//   1. a page from a loopback origin syncs with the node, both ways;
//   2. a page from a foreign origin is refused: its WebSocket is accepted and then closed
//      with 4403 and a reason before any sync message, it never syncs, and its edit is not
//      applied (stock provider and a raw socket that writes at once);
//   3. cross-site "simple" POSTs (text/plain, no-cors, no preflight) from a foreign page to an
//      admin route (/commands) and to the document API (/rooms/R) get 403 and change nothing;
//   4. the node, bound to 127.0.0.1, refuses a foreign Host name (DNS rebinding) with 403 or
//      421 in the error envelope, for navigations, same-origin reads and WebSockets alike;
//      loopback names keep working.
//
// Every page is served from 127.0.0.1, so Chromium's own guard against public pages reaching
// local addresses (Local Network Access) stays out of the way: what is tested is the node's
// refusal, the one every browser relies on.
//
// Chromium missing: the tests skip with a message, except under CI=true where they fail
// (scripts/test.sh installs it with apt when running as root).
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import * as fs from 'node:fs'
import * as http from 'node:http'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'
import { chromium } from 'playwright-core'
import { Y, startNode, connect, waitSynced, waitFor, withCleanup, getJson } from '../lib/node.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const interopDir = path.resolve(here, '..')

const CHROMIUM = '/usr/bin/chromium'
/** A foreign web site's host name; Chromium resolves it to 127.0.0.1. */
const FOREIGN = 'evil.test'
/** Every wait on a condition in this file. */
const WAIT_MS = 10000
/** The close code of a refused WebSocket (ARCHITECTURE "WebSocket close codes"). */
const FORBIDDEN_CLOSE = 4403
/** The HTTP statuses that refuse a foreign Host name (Forbidden, Misdirected Request). */
const HOST_REFUSED = [403, 421]

const chromiumMissing = !fs.existsSync(CHROMIUM)
const underCi = process.env.CI === 'true'
const skip = chromiumMissing && !underCi
  ? `Chromium not found at ${CHROMIUM}: install Debian's chromium (apt-get install chromium, ` +
    'or run scripts/test.sh as root) to run the browser tests'
  : false

// ---------------------------------------------------------------------------------------------
// harness: the page bundle, the static site, Chromium

/** Bundles lib/browser-page.mjs (stock yjs + y-websocket) with esbuild into `dir`. */
async function buildPage (dir) {
  await esbuild.build({
    absWorkingDir: interopDir,
    entryPoints: [path.join(interopDir, 'lib', 'browser-page.mjs')],
    bundle: true,
    format: 'iife',
    platform: 'browser',
    outfile: path.join(dir, 'app.js'),
    logLevel: 'silent'
  })
  fs.writeFileSync(path.join(dir, 'index.html'),
    '<!doctype html><meta charset="utf-8"><title>ymesh browser test</title>' +
    '<script src="/app.js"></script>\n')
}

const CONTENT_TYPES = { '/': 'text/html; charset=utf-8', '/app.js': 'text/javascript; charset=utf-8' }
const FILES = { '/': 'index.html', '/app.js': 'app.js' }

/** The page's files: {status, contentType, body} for `/` and `/app.js`, else null. */
function siteFile (dir, pathname) {
  if (!FILES[pathname]) return null
  return { status: 200, contentType: CONTENT_TYPES[pathname], body: fs.readFileSync(path.join(dir, FILES[pathname])) }
}

/** Serves the page from `dir` on 127.0.0.1:0. `origin(host)` is the page's URL under `host`. */
async function startSite (dir) {
  const server = http.createServer((req, res) => {
    const f = siteFile(dir, new URL(req.url, 'http://x').pathname)
    if (!f) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(f.status, { 'Content-Type': f.contentType, 'Cache-Control': 'no-store' }).end(f.body)
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address()
  return {
    port,
    origin: (host) => `http://${host}:${port}`,
    async close () {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    }
  }
}

function launchChromium () {
  const args = [`--host-resolver-rules=MAP ${FOREIGN} 127.0.0.1`]
  // Chromium's sandbox refuses to run as root.
  if (process.getuid && process.getuid() === 0) args.push('--no-sandbox')
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30000 })
}

// ---------------------------------------------------------------------------------------------
// the suite

describe('browser origins and hosts (Chromium)', () => {
  let node = null
  let site = null
  let browser = null
  let pageDir = null
  /** The node of the DNS rebinding test, started on a port the page already knows. */
  let rebound = null

  const closeAll = async () => {
    if (browser) await browser.close().catch(() => {})
    if (site) await site.close().catch(() => {})
    if (node) await node.stop()
    if (rebound) await rebound.stop()
    if (pageDir) fs.rmSync(pageDir, { recursive: true, force: true })
    browser = site = node = rebound = pageDir = null
  }

  before(async () => {
    if (skip) return
    if (chromiumMissing) {
      throw new Error(`CI=true and Chromium is missing at ${CHROMIUM}: the browser tests must run ` +
        '(scripts/test.sh installs it with apt when running as root)')
    }
    try {
      pageDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ymesh-browser-'))
      await buildPage(pageDir)
      site = await startSite(pageDir)
      node = await startNode()
      browser = await launchChromium()
    } catch (e) {
      await closeAll()
      throw e
    }
  })
  after(closeAll)

  const it = (name, fn) => test(name, { skip, timeout: 60000 }, withCleanup(() => [node, rebound], fn))

  /** The node's Y.Text 't' of `room` as seen over HTTP from Node.js; null while 404. */
  const nodeText = async (room, on = node) => {
    const { status, body } = await getJson(`${on.url}/rooms/${encodeURIComponent(room)}?format=json`)
    if (status === 404) return null
    assert.equal(status, 200, `GET /rooms/${room}: ${JSON.stringify(body)}`)
    return body.data.t ?? ''
  }

  /**
   * Runs `fn(page)` in a fresh browser context (its own cookies and cache), on `url` when
   * given; the context is closed whatever happens.
   */
  const withPage = async (url, fn) => {
    const context = await browser.newContext()
    try {
      const page = await context.newPage()
      page.setDefaultTimeout(WAIT_MS)
      if (url) await openApp(page, url)
      await fn(page)
    } finally {
      await context.close()
    }
  }

  /** Navigates to the page at `url` and waits for its script. */
  const openApp = async (page, url) => {
    const res = await page.goto(url)
    assert.equal(res.status(), 200, `the test page at ${url}`)
    await page.waitForFunction(() => !!window.ymesh)
  }

  /** Connects the page's stock provider (session `id`). */
  const pageConnect = (page, id, serverUrl, room, text) =>
    page.evaluate(([i, u, r, t]) => window.ymesh.connect(i, u, r, t), [id, serverUrl, room, text])

  const pageSession = (page, id) => page.evaluate((i) => window.ymesh.session(i), id)

  /** Waits until the page's session `id` satisfies `pred`; returns its state. */
  const waitSession = (page, id, pred, what) => {
    let last = null
    return waitFor(async () => {
      last = await pageSession(page, id)
      return pred(last) && last
    }, WAIT_MS, () => `${what} (page session: ${JSON.stringify(last)})`)
  }

  /** The node decided about the page's socket: it closed it, or the page synced. */
  const decided = (s) => s.closes.length > 0 || s.synced

  /** Asserts the node refused the page's socket and applied none of its edit to `room`. */
  const assertRefused = async (s, room, text, { code = FORBIDDEN_CLOSE, on = node } = {}) => {
    assert.equal(s.synced, false, 'the page must never become synced')
    assert.equal(s.messagesReceived, 0, 'the node must send no sync message to a refused page')
    assert.ok(s.closes.length > 0, 'the node must close the socket')
    if (code !== null) {
      assert.equal(s.closes[0].code, code, `close code (close: ${JSON.stringify(s.closes[0])})`)
      assert.ok(s.closes[0].reason.length > 0, 'the close carries a reason')
    }
    const t = await nodeText(room, on)
    assert.ok(t === null || !t.includes(text), `the node must not have the page's edit (room text ${JSON.stringify(t)})`)
  }

  // 1 -----------------------------------------------------------------------------------------

  for (const host of ['127.0.0.1', 'localhost']) {
    it(`1. a page from the loopback origin http://${host}:PORT syncs with the node, both ways`, async (track) => {
      const room = `browser-loopback-${host}`
      const text = `typed in a page at http://${host}`
      await withPage(site.origin(host) + '/', async (page) => {
        await pageConnect(page, 'a', node.wsUrl, room, text)
        await waitSession(page, 'a', (s) => s.synced, 'the page to sync')
        await waitFor(async () => (await nodeText(room)) === text, WAIT_MS, "the page's edit on the node")

        // A Node.js client of the same room gets it and its answer reaches the page.
        const other = track(connect(node.wsUrl, room))
        await waitSynced(other.provider)
        assert.equal(other.doc.getText('t').toString(), text)
        other.doc.getText('t').insert(text.length, ' + from Node.js')
        await waitSession(page, 'a', (s) => s.text === `${text} + from Node.js`, "the Node.js edit in the page")
        const s = await pageSession(page, 'a')
        assert.deepEqual(s.closes, [], 'the node never closed the page')
      })
    })
  }

  // 2 -----------------------------------------------------------------------------------------

  it(`2. a page from a foreign origin (http://${FOREIGN}:PORT) is closed with 4403 before any sync and writes nothing`, async () => {
    await withPage(site.origin(FOREIGN) + '/', async (page) => {
      // The stock provider, editing the moment its socket opens.
      const room = 'browser-foreign-provider'
      const text = 'written by a foreign page'
      await pageConnect(page, 'evil', node.wsUrl, room, text)
      const s = await waitSession(page, 'evil', decided, 'the node to close the foreign page\'s socket')
      await assertRefused(s, room, text)
      assert.equal(s.terminal?.code, FORBIDDEN_CLOSE, 'y-websocket treats 4403 as final: no reconnect')

      // A hand-written client that sends an update before anything else.
      const rawRoom = 'browser-foreign-raw'
      const seen = await page.evaluate(([u, t, ms]) => window.ymesh.rawWrite(u, t, ms),
        [`${node.wsUrl}/${rawRoom}`, 'raw write by a foreign page', WAIT_MS])
      assert.ok(seen.close, `the node must close the raw socket (saw ${JSON.stringify(seen)})`)
      assert.deepEqual(seen.messageTypes, [], 'no message to a refused socket')
      assert.equal(seen.close.code, FORBIDDEN_CLOSE, `close code (close: ${JSON.stringify(seen.close)})`)
      assert.ok(seen.close.reason.length > 0, 'the close carries a reason')
      assert.equal(await nodeText(rawRoom), null, 'the raw write created nothing')
    })
  })

  // 3 -----------------------------------------------------------------------------------------

  it('3. cross-site simple POSTs (text/plain, no-cors) from a foreign page get 403 and change nothing', async () => {
    const room = 'browser-simple-post'
    await withPage(site.origin(FOREIGN) + '/', async (page) => {
      // The page cannot read no-cors responses; the browser's network events give their status
      // (Chromium may then fail the request for the page, e.g. when it blocks an opaque JSON
      // body: that comes after the response and does not hide its status).
      const statuses = {}
      const failures = {}
      const onNode = (r) => r.url().startsWith(node.url) ? new URL(r.url()).pathname : null
      page.on('response', (r) => { if (onNode(r)) statuses[onNode(r)] = r.status() })
      page.on('requestfailed', (r) => { if (onNode(r)) failures[onNode(r)] = r.failure()?.errorText })
      const sent = await page.evaluate(([u, r, t]) => window.ymesh.simplePosts(u, r, t),
        [node.url, room, 'posted by a foreign page'])
      assert.deepEqual(sent, { command: 'sent', update: 'sent' }, 'the browser sends both (no preflight)')
      const roomPath = `/rooms/${room}`
      await waitFor(() => statuses['/commands'] !== undefined && statuses[roomPath] !== undefined, WAIT_MS,
        () => `both responses (statuses ${JSON.stringify(statuses)}, failures ${JSON.stringify(failures)})`)

      // Nothing changed: no command was issued, no room was written.
      assert.ok(!/command issued/.test(node.logs()), 'the node must not issue the cross-site command')
      assert.equal(await nodeText(room), null, 'the cross-site update must not create the room')
      // And the node said so.
      assert.equal(statuses['/commands'], 403, 'POST /commands from a foreign origin')
      assert.equal(statuses[roomPath], 403, `POST ${roomPath} from a foreign origin`)
    })
  })

  // 4 -----------------------------------------------------------------------------------------

  /** Puts a room on the node (from Node.js, Host 127.0.0.1) that a rebinding page must not see. */
  const seedSecretRoom = async (room, on = node) => {
    const doc = new Y.Doc()
    doc.getText('t').insert(0, 'secret')
    const res = await fetch(`${on.url}/rooms/${room}`, {
      method: 'POST', body: Y.encodeStateAsUpdate(doc), signal: AbortSignal.timeout(WAIT_MS)
    })
    assert.equal(res.status, 200, `seeding ${room}: ${await res.text()}`)
  }

  /** Asserts `{status, text}` is a Host refusal in the error envelope that leaks no room. */
  const assertHostRefused = (status, text, secret, what) => {
    assert.ok(HOST_REFUSED.includes(status), `${what}: status ${status} (want one of ${HOST_REFUSED}); body ${text}`)
    let body = null
    try { body = JSON.parse(text) } catch {}
    assert.equal(typeof body?.error?.message, 'string', `${what}: the error envelope, got ${text}`)
    assert.ok(!text.includes(secret), `${what}: the refusal must not list rooms`)
  }

  it(`4. the node under a foreign Host name (http://${FOREIGN}:NODEPORT, DNS rebinding) refuses; loopback names work`, async () => {
    const secret = 'browser-rebinding-secret'
    await seedSecretRoom(secret)
    await withPage(null, async (page) => {
      for (const host of ['localhost', '127.0.0.1']) {
        const res = await page.goto(`http://${host}:${node.port}/rooms`)
        assert.equal(res.status(), 200, `GET http://${host}:PORT/rooms`)
        assert.ok((await res.text()).includes(secret), `http://${host}:PORT/rooms lists the rooms`)
      }
      const res = await page.goto(`http://${FOREIGN}:${node.port}/rooms`)
      assertHostRefused(res.status(), await res.text(), secret, `GET http://${FOREIGN}:PORT/rooms`)
    })
  })

  it(`4. a rebinding page (loaded as http://${FOREIGN}:P, then P is the node) can neither read the node nor sync with it`, async () => {
    // DNS rebinding, played with a port instead of a DNS answer: the attacker's page is loaded
    // from http://evil.test:P (a static server on P), then P leads to the node. The page's
    // requests are same-origin to it (Origin http://evil.test:P is the Host it sends), so only
    // the node's Host check stands in the way.
    const attacker = await startSite(pageDir)
    const P = attacker.port
    await withPage(null, async (page) => {
      try {
        await openApp(page, `http://${FOREIGN}:${P}/`)
      } finally {
        await attacker.close()
      }
      rebound = await startNode({ port: P })
      try {
        const secret = 'browser-rebinding-secret-2'
        await seedSecretRoom(secret, rebound)

        const read = await page.evaluate(() => window.ymesh.read('/rooms'))
        assertHostRefused(read.status, read.body, secret, 'a same-origin fetch of /rooms by the rebinding page')

        const room = 'browser-rebinding-ws'
        const text = 'written by a rebinding page'
        await pageConnect(page, 'rebound', `ws://${FOREIGN}:${P}/rooms`, room, text)
        const s = await waitSession(page, 'rebound', decided, 'the node to refuse the rebinding page\'s socket')
        // Refused as a 403/421 upgrade or as a 4403 close: either way never synced, nothing written.
        await assertRefused(s, room, text, { code: null, on: rebound })
      } finally {
        await rebound.stop()
      }
    }).finally(() => attacker.close())
  })
})
