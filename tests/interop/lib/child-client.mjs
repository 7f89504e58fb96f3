// A stock y-websocket client in its own process, so a test can SIGKILL it (abrupt close:
// no close frame, no awareness null). Usage:
//   node child-client.mjs <wsUrl> <room> <clientID> <stateJSON>
// Prints "READY <clientID>" once synced with its awareness state set. Exits by itself after
// 60 s so it can never outlive the test run.
import { connect, waitSynced } from './node.mjs'

const [wsUrl, room, clientID, stateJSON] = process.argv.slice(2)
const c = connect(wsUrl, room, { clientID: Number(clientID) })
c.awareness.setLocalState(JSON.parse(stateJSON))
c.doc.getText('t').insert(0, `child ${clientID};`)
setTimeout(() => process.exit(3), 60000).unref()
const keepAlive = setInterval(() => {}, 1000)
try {
  await waitSynced(c.provider, 15000)
  process.stdout.write(`READY ${c.doc.clientID}\n`)
} catch (e) {
  process.stderr.write(`child failed: ${e.message}\n`)
  clearInterval(keepAlive)
  process.exit(2)
}
