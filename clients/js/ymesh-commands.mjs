// ymesh maintenance commands (message type 103) for the stock y-websocket WebsocketProvider.
//
// A ymesh node sends commands (migrate, reindex, compact, invalidate) to clients that opted in
// with `commands=1` on their WebSocket URL; each client runs a handler and answers with a
// result. The wire format is in ymesh's docs/protocol.md, section 5.2:
//
//   varUint(103) · varUint(subtype) · varString(JSON)      subtype 0 = command, 1 = result
//
// Usage (see README.md next to this file):
//
//   const provider = new WebsocketProvider(url, room, doc, { params: { commands: '1' } })
//   attachCommands(provider, { compact: async (command, { doc, provider }) => ({ bytes: 42 }) })
//
// Peer dependencies: yjs, lib0 (both come with y-websocket). Tested with y-websocket 3.1.0.

import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'

/** Message type of ymesh maintenance commands. */
export const messageCommand = 103
/** Subtype of a command (node → client). */
export const subtypeCommand = 0
/** Subtype of a result (client → node). */
export const subtypeResult = 1
/**
 * A command id is remembered until the command's deadline, and at least this long (10
 * minutes): the deadline is on the node's clock, which may differ from this one.
 */
export const MIN_RETENTION_MS = 10 * 60 * 1000

const OUTCOME = Symbol('ymesh command outcome')

/**
 * Explicit handler outcomes. A handler may also return any other value (sent as `detail`
 * with status `ok`; `undefined` becomes `null`) or throw (status `error`, the message as
 * `detail`).
 */
export const outcome = {
  /** @param {any} [detail] */
  ok: (detail = null) => ({ [OUTCOME]: true, status: 'ok', detail }),
  /** Tried and failed. @param {any} detail */
  error: (detail) => ({ [OUTCOME]: true, status: 'error', detail }),
  /** Declined on purpose (policy, read-only client, ...). @param {any} detail */
  refused: (detail) => ({ [OUTCOME]: true, status: 'refused', detail }),
  /** This client does not handle the command. @param {any} [detail] */
  unsupported: (detail = null) => ({ [OUTCOME]: true, status: 'unsupported', detail })
}

/**
 * The command ids this client has acted on. Pass the same `CommandDedup` to
 * `attachCommands` for every provider of one client (for example one Y.Doc connected to two
 * ymesh nodes): each command then runs once, and is answered once, on the provider where it
 * arrived first.
 */
export class CommandDedup {
  /** @param {{ capacity?: number, retentionMs?: number }} [opts] */
  constructor ({ capacity = 10000, retentionMs = MIN_RETENTION_MS } = {}) {
    this.capacity = Math.max(1, capacity)
    this.retentionMs = retentionMs
    /** id -> expiry time (ms); a Map keeps insertion order, so the first key is the oldest. */
    this.seen = new Map()
  }

  /**
   * Records the command's id; true the first time (act on it), false for a duplicate.
   * @param {{ id: string, deadline_ms?: number }} command
   * @param {number} [now]
   */
  firstSight (command, now = Date.now()) {
    for (const [id, expires] of this.seen) {
      if (expires > now) break // not strictly ordered by expiry; the cap bounds the rest
      this.seen.delete(id)
    }
    const expires = this.seen.get(command.id)
    if (expires !== undefined && expires > now) return false
    this.seen.delete(command.id)
    const deadline = Number.isFinite(command.deadline_ms) ? command.deadline_ms : 0
    this.seen.set(command.id, Math.max(deadline, now + this.retentionMs))
    while (this.seen.size > this.capacity) this.seen.delete(this.seen.keys().next().value)
    return true
  }
}

/** `[103, 1, varString(JSON.stringify(result))]`. */
export function encodeResultFrame (result) {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, messageCommand)
  encoding.writeVarUint(encoder, subtypeResult)
  encoding.writeVarString(encoder, JSON.stringify(result))
  return encoding.toUint8Array(encoder)
}

/** `[103, 0, varString(JSON.stringify(command))]` (what a node sends; handy in tests). */
export function encodeCommandFrame (command) {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, messageCommand)
  encoding.writeVarUint(encoder, subtypeCommand)
  encoding.writeVarString(encoder, JSON.stringify(command))
  return encoding.toUint8Array(encoder)
}

/**
 * Decodes a type-103 frame into `{ subtype, json }`, or returns null for another type.
 * @param {Uint8Array} frame
 */
export function decodeCommandFrame (frame) {
  const decoder = decoding.createDecoder(frame)
  if (decoding.readVarUint(decoder) !== messageCommand) return null
  const subtype = decoding.readVarUint(decoder)
  return { subtype, json: decoding.readVarString(decoder) }
}

/** @param {Uint8Array} a @param {Uint8Array} b */
const sameBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i])

const isOpen = (ws) => ws != null && ws.readyState === ws.OPEN

/**
 * Makes `provider` answer ymesh maintenance commands.
 *
 * The provider must connect with `params: { commands: '1' }` (ymesh sends commands to no
 * other client); a warning is logged otherwise.
 *
 * For each command (a JSON object, docs/protocol.md 5.2) that this client has not seen
 * (`dedup`), the handler for its kind runs as `handlers[kind](command, { doc, provider })`
 * and may be async. Kinds without a handler are answered `unsupported`. The result goes back
 * on the connection the command arrived on or, if that one has closed meanwhile (a handler
 * that reconnects the provider, for instance), on the provider's next connection:
 *
 *   {"id", "responder": String(doc.clientID), "responder_kind": "client", "room",
 *    "status": "ok" | "error" | "refused" | "unsupported", "detail", "at_ms"}
 *
 * @param {import('y-websocket').WebsocketProvider} provider
 * @param {Record<string, (command: any, ctx: { doc: Y.Doc, provider: any }) => any>} handlers
 * @param {{
 *   onResult?: (result: any, info: { command: any, provider: any }) => void,
 *   dedup?: CommandDedup,
 *   log?: Pick<Console, 'warn'>
 * }} [opts]
 * @return {() => void} detaches: restores the previous type-103 handler and drops pending sends
 */
export function attachCommands (provider, handlers = {}, { onResult, dedup = new CommandDedup(), log = console } = {}) {
  if (provider.params?.commands !== '1') {
    log.warn('ymesh-commands: the provider does not connect with params: { commands: \'1\' }; the node will send it no commands')
  }
  const previous = provider.messageHandlers[messageCommand]
  const pending = new Set()
  let detached = false

  const send = (frame, ws) => {
    if (isOpen(ws)) {
      ws.send(frame)
      return
    }
    // The command's connection is gone: send on the next one, once it is open.
    const onStatus = ({ status }) => {
      if (status !== 'connected' || !isOpen(provider.ws)) return
      provider.off('status', onStatus)
      pending.delete(onStatus)
      provider.ws.send(frame)
    }
    pending.add(onStatus)
    provider.on('status', onStatus)
    onStatus({ status: provider.wsconnected ? 'connected' : 'connecting' })
  }

  const run = async (command, ws) => {
    const handler = Object.hasOwn(handlers, command.kind) ? handlers[command.kind] : undefined
    let status = 'ok'
    let detail = null
    if (typeof handler !== 'function') {
      status = 'unsupported'
      detail = `command kind ${JSON.stringify(command.kind)} is not supported`
    } else {
      try {
        const value = await handler(command, { doc: provider.doc, provider })
        if (value != null && value[OUTCOME]) {
          status = value.status
          detail = value.detail ?? null
        } else {
          detail = value ?? null
        }
      } catch (e) {
        status = 'error'
        detail = e instanceof Error ? e.message : String(e)
      }
    }
    if (detached) return
    const result = {
      id: command.id,
      responder: String(provider.doc.clientID),
      responder_kind: 'client',
      room: command.room ?? null,
      status,
      detail,
      at_ms: Date.now()
    }
    send(encodeResultFrame(result), ws)
    if (onResult) onResult(result, { command, provider })
  }

  // y-websocket calls this with the frame's decoder positioned after the type. Nothing is
  // written to `encoder`: the result is sent later, when the (possibly async) handler is done.
  provider.messageHandlers[messageCommand] = (_encoder, decoder, _provider, _emitSynced, _messageType) => {
    const subtype = decoding.readVarUint(decoder)
    if (subtype !== subtypeCommand) return // results and future subtypes are not for clients
    let command
    try {
      command = JSON.parse(decoding.readVarString(decoder))
    } catch (e) {
      log.warn(`ymesh-commands: ignoring a malformed command: ${e.message}`)
      return
    }
    if (command == null || typeof command.id !== 'string' || command.id === '' || typeof command.kind !== 'string') {
      log.warn('ymesh-commands: ignoring a command without a string id and kind')
      return
    }
    if (!dedup.firstSight(command)) return
    run(command, provider.ws).catch((e) => log.warn(`ymesh-commands: command ${command.id}: ${e.message}`))
  }

  return () => {
    detached = true
    for (const onStatus of pending) provider.off('status', onStatus)
    pending.clear()
    if (previous === undefined) delete provider.messageHandlers[messageCommand]
    else provider.messageHandlers[messageCommand] = previous
  }
}

// -------------------------------------------------------------------------------------------
// Example handlers: the typical client action for each kind. Combine them, or use them as a
// starting point:
//
//   attachCommands(provider, {
//     invalidate: invalidateHandler(store),
//     compact: compactHandler(store),
//     migrate: migrateHandler({ 1: (doc) => {...}, 2: (doc) => {...} }),
//     reindex: reindexHandler((doc) => searchIndex.rebuild(doc))
//   })
//
// `store` is `{ persistence, createPersistence }`: the current local persistence (for example
// y-indexeddb's `new IndexeddbPersistence(name, doc)`), and a function making a new one for a
// doc. The handlers replace `store.persistence` when they recreate it.

/**
 * `invalidate`: the node says the local copy may be stale or corrupt. Deletes the local cache
 * (y-indexeddb's `clearData()`: the IndexedDB database is deleted and the persistence
 * destroyed), starts a fresh one when `createPersistence` is given, and reconnects the
 * provider so a full sync exchange runs again. The result is sent on the new connection.
 *
 * This does not discard the in-memory Y.Doc (the helper cannot swap your app's document); an
 * app that must drop it too should do so in its own handler, then recreate the provider.
 *
 * @param {{ persistence?: { clearData: () => Promise<void> } | null, createPersistence?: (doc: Y.Doc) => any }} [store]
 */
export function invalidateHandler (store = {}) {
  return async (_command, { doc, provider }) => {
    const cleared = store.persistence != null
    if (cleared) await store.persistence.clearData()
    if (store.createPersistence) {
      store.persistence = store.createPersistence(doc)
      if (store.persistence?.whenSynced) await store.persistence.whenSynced
    }
    provider.disconnect()
    provider.connect()
    return { cleared, reconnected: true }
  }
}

/**
 * `compact`: rewrites local storage as one update. The document's state is encoded with
 * `Y.encodeStateAsUpdate`, checked by loading it into a fresh Y.Doc, then the old storage is
 * cleared and a new persistence is created, which stores the state as a single entry (what
 * y-indexeddb does when it opens).
 *
 * @param {{ persistence: { clearData: () => Promise<void> }, createPersistence: (doc: Y.Doc) => any }} store
 */
export function compactHandler (store) {
  return async (_command, { doc }) => {
    const update = Y.encodeStateAsUpdate(doc)
    const fresh = new Y.Doc()
    try {
      Y.applyUpdate(fresh, update)
      if (!sameBytes(Y.encodeStateVector(fresh), Y.encodeStateVector(doc))) return outcome.error('the re-encoded state does not match the document; storage left as it was')
    } finally {
      fresh.destroy()
    }
    await store.persistence.clearData()
    store.persistence = store.createPersistence(doc)
    if (store.persistence?.whenSynced) await store.persistence.whenSynced
    return { bytes: update.byteLength }
  }
}

/**
 * `migrate`: runs the app's migrations up to `command.args.version`, in one transaction, and
 * records the version reached in the Y.Map `meta` under `schema_version` (so every client
 * sees it). `migrations` maps each version to a function `(doc, command)` that brings the
 * document from the previous version to that one. Migrations must be idempotent: two clients
 * may run the same one concurrently, and the CRDT merges both.
 *
 * A document already at or above the target is left alone (`ok`, nothing applied). A missing
 * step, or a missing `args.version`, gives `error`.
 *
 * @param {Record<number, (doc: Y.Doc, command: any) => void>} migrations
 * @param {{ metaName?: string, versionKey?: string }} [opts]
 */
export function migrateHandler (migrations, { metaName = 'meta', versionKey = 'schema_version' } = {}) {
  return (command, { doc }) => {
    const target = command.args?.version
    if (!Number.isInteger(target) || target < 0) return outcome.error('args.version must be a non-negative integer')
    const meta = doc.getMap(metaName)
    const from = meta.get(versionKey) ?? 0
    if (from >= target) return { from, to: from, applied: [] }
    const steps = []
    for (let v = from + 1; v <= target; v++) {
      if (typeof migrations[v] !== 'function') return outcome.error(`no migration to version ${v}`)
      steps.push(v)
    }
    doc.transact(() => {
      for (const v of steps) {
        migrations[v](doc, command)
        meta.set(versionKey, v)
      }
    }, 'ymesh-migrate')
    return { from, to: target, applied: steps }
  }
}

/**
 * `reindex`: rebuilds an index the app derives from the document (search, lookup tables).
 * `rebuild(doc, command)` may be async; what it returns is sent as `detail.indexed`.
 *
 * @param {(doc: Y.Doc, command: any) => any} rebuild
 */
export function reindexHandler (rebuild) {
  return async (command, { doc }) => ({ indexed: (await rebuild(doc, command)) ?? null })
}
