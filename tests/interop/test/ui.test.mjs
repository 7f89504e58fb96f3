// The status page at GET /ui, in a real browser (Debian's Chromium driven by
// playwright-core, as in browser.test.mjs).
//
// Two nodes, A and B; A dials B and runs with a client token. The page on A:
//   1. asks for the token once, keeps it in sessionStorage and loads;
//   2. shows a room after a stock client edits it;
//   3. shows B as a connected, synced peer ("Up to Date");
//   4. shows a third room without a reload when a client creates it;
//   5. keeps the token across a reload (no second prompt) and fits a phone's width.
// With YMESH_UI_SCREENSHOT=PATH the page is saved there as a PNG (docs/status-page.png is
// made that way).
//
// A third node serves https:// with a certificate the test makes (tests/fixtures/gen-cert.sh,
// a throwaway CA the browser is told to ignore): the page loads over https, its feed answers
// and it shows a room.
//
// Chromium missing: the test skips with a message, except under CI=true where it fails.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import * as fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { chromium } from 'playwright-core'
import {
  startNode, connect, waitSynced, waitFor, withCleanup, getJson, makeDataDir, removeDataDir,
  repoRoot, Y
} from '../lib/node.mjs'

const CHROMIUM = '/usr/bin/chromium'
const WAIT_MS = 15000
const TOKEN = 'ui-test-token'

const chromiumMissing = !fs.existsSync(CHROMIUM)
const underCi = process.env.CI === 'true'
const skip = chromiumMissing && !underCi
  ? `Chromium not found at ${CHROMIUM}: install Debian's chromium to run the browser tests`
  : false

function launchChromium () {
  const args = []
  // Chromium's sandbox refuses to run as root.
  if (process.getuid && process.getuid() === 0) args.push('--no-sandbox')
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30000 })
}

describe('status page (Chromium)', () => {
  let a = null
  let b = null
  let browser = null

  const closeAll = async () => {
    if (browser) await browser.close().catch(() => {})
    if (a) await a.stop()
    if (b) await b.stop()
    browser = a = b = null
  }

  before(async () => {
    if (skip) return
    if (chromiumMissing) {
      throw new Error(`CI=true and Chromium is missing at ${CHROMIUM}: the browser tests must run`)
    }
    try {
      b = await startNode()
      a = await startNode({ args: ['--token', TOKEN, '--peer', `ws://127.0.0.1:${b.port}`] })
      browser = await launchChromium()
    } catch (e) {
      await closeAll()
      throw e
    }
  })
  after(closeAll)

  /** A stock client on A writes `text` into room `room` and waits until B has it. */
  const edit = async (track, room, text) => {
    const c = track(connect(a.wsUrl, room, { params: { token: TOKEN } }))
    await waitSynced(c.provider, WAIT_MS)
    c.doc.getText('t').insert(0, text)
    await waitFor(async () => {
      const { status, body } = await getJson(`${b.url}/rooms/${room}?format=json`)
      return status === 200 && body.data.t === text
    }, WAIT_MS, `room ${room} on B`)
    return c
  }

  test('shows rooms, a synced peer and new rooms live', { skip, timeout: 90000 }, withCleanup(() => [a, b], async (track) => {
    const { body: bRoot } = await getJson(`${b.url}/`)
    const bId = bRoot.data.node_id
    assert.ok(bId, 'B has a node id')
    await edit(track, 'ui-first', 'one')
    await edit(track, 'ui-second', 'two')

    const context = await browser.newContext({ viewport: { width: 1100, height: 900 } })
    try {
      const page = await context.newPage()
      page.setDefaultTimeout(WAIT_MS)
      const errors = []
      page.on('pageerror', (e) => errors.push(e.message))
      page.on('console', (m) => { if (m.type() === 'error' && !/401/.test(m.text())) errors.push(m.text()) })

      const res = await page.goto(`${a.url}/ui`)
      assert.equal(res.status(), 200, 'the page itself needs no token')

      // 1. The feed needs the token: the page asks once and keeps it for the tab.
      await page.locator('#login').waitFor({ state: 'visible' })
      await page.fill('#token', TOKEN)
      await page.click('#login button')
      await page.locator('#main').waitFor({ state: 'visible' })
      assert.equal(await page.evaluate(() => sessionStorage.getItem('ymesh-token')), TOKEN)

      // 2. The rooms a client edited.
      await page.locator('#room-rows tr[data-room="ui-first"]').waitFor()
      await page.locator('#room-rows tr[data-room="ui-second"]').waitFor()

      // 3. B, connected and synced (every shared room), as GET /peers has it.
      const peer = page.locator(`.peer[data-peer="${bId}"][data-state="connected"][data-synced="true"]`)
      await peer.waitFor()
      assert.match(await peer.locator('.sync-label').textContent(), /Up to Date/)
      const { body: peers } = await getJson(`${a.url}/peers`, { headers: { authorization: `Bearer ${TOKEN}` } })
      const row = peers.data.find((p) => p.node_id === bId)
      assert.equal(row.state, 'connected')
      assert.ok(row.rooms.filter((r) => r.name.startsWith('ui-')).every((r) => r.status === 'synced'),
        `GET /peers agrees: ${JSON.stringify(row.rooms)}`)

      // 4. A third room appears without a reload.
      await page.evaluate(() => { window.__sameDocument = true })
      await edit(track, 'ui-third', 'three')
      await page.locator('#room-rows tr[data-room="ui-third"]').waitFor()
      assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload happened')
      await page.locator(`.peer[data-peer="${bId}"][data-synced="true"]`).waitFor()

      // The charts have samples to draw (one every 2 s; a line needs three).
      await waitFor(async () => (await page.locator('#chart-links rect').count()) > 0, WAIT_MS, 'the link chart')
      await waitFor(async () => (await page.locator('#chart-updates polyline').count()) > 0, WAIT_MS,
        'a line in the updates chart')

      if (process.env.YMESH_UI_SCREENSHOT) {
        await page.locator(`.peer[data-peer="${bId}"] details`).evaluate((d) => { d.open = true })
        await page.screenshot({ path: process.env.YMESH_UI_SCREENSHOT, fullPage: true })
      }

      // 5. A reload keeps the token (no prompt), and the page fits a phone.
      await page.setViewportSize({ width: 390, height: 844 })
      await page.reload()
      await page.locator('#room-rows tr[data-room="ui-third"]').waitFor()
      assert.equal(await page.locator('#login').isVisible(), false, 'no second prompt')
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
      assert.ok(overflow <= 1, `no sideways scrolling on a phone (${overflow} px too wide)`)
      assert.deepEqual(errors, [], 'no script errors')
    } finally {
      await context.close()
    }
  }))
})

/** POSTs `body` to `url` over HTTPS, trusting `ca`; resolves the status. */
function postTrusting (url, body, ca) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method: 'POST', ca, timeout: 10000 }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
    })
    req.on('timeout', () => req.destroy(new Error(`POST ${url} timed out`)))
    req.on('error', reject)
    req.end(Buffer.from(body))
  })
}

describe('status page over https (Chromium)', () => {
  let node = null
  let browser = null
  let dir = null

  before(async () => {
    if (skip) return
    if (chromiumMissing) {
      throw new Error(`CI=true and Chromium is missing at ${CHROMIUM}: the browser tests must run`)
    }
    dir = makeDataDir()
    const gen = spawnSync('bash', [path.join(repoRoot, 'tests/fixtures/gen-cert.sh'), dir], { encoding: 'utf8' })
    assert.equal(gen.status, 0, gen.stderr)
    try {
      node = await startNode({
        args: ['--tls-cert', path.join(dir, 'cert.pem'), '--tls-key', path.join(dir, 'key.pem')]
      })
      browser = await launchChromium()
    } catch (e) {
      if (browser) await browser.close().catch(() => {})
      if (node) await node.stop()
      throw e
    }
  })
  after(async () => {
    if (browser) await browser.close().catch(() => {})
    if (node) await node.stop()
    if (dir) removeDataDir(dir)
  })

  test('loads over https and shows a room', { skip, timeout: 60000 }, async () => {
    assert.ok(node.url.startsWith('https://'), node.url)
    const doc = new Y.Doc()
    doc.getText('t').insert(0, 'over tls')
    const ca = fs.readFileSync(path.join(dir, 'ca.pem'))
    assert.equal(await postTrusting(`${node.url}/rooms/ui-https`, Y.encodeStateAsUpdate(doc), ca), 200)

    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 900 } })
    try {
      const page = await context.newPage()
      page.setDefaultTimeout(WAIT_MS)
      const errors = []
      page.on('pageerror', (e) => errors.push(e.message))
      page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()) })
      const res = await page.goto(`${node.url}/ui`)
      assert.equal(res.status(), 200)
      await page.locator('#main').waitFor({ state: 'visible' })
      await page.locator('#room-rows tr[data-room="ui-https"]').waitFor()
      assert.match(await page.locator('#node-facts').textContent(), /https:\/\/127\.0\.0\.1:/)
      assert.deepEqual(errors, [], 'no script errors')
    } finally {
      await context.close()
    }
  })
})
