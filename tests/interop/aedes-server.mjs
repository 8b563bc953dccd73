// An aedes broker for tests/interop.rs: MQTT on 127.0.0.1:<port>, MQTT over
// WebSocket on 127.0.0.1:<ws-port> (0: none). aedes lives in <node_modules>
// (scripts/interop-deps.sh installs the pinned version there), outside the tree.
//   node aedes-server.mjs <node_modules> <port> <ws-port>
import { createServer } from 'node:net'
import { createServer as createHttpServer } from 'node:http'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const [modules, port, wsPort] = process.argv.slice(2)
const load = (file) => import(pathToFileURL(join(modules, file)).href)
const { Aedes } = await load('aedes/aedes.js')
const { WebSocketServer, createWebSocketStream } = await load('ws/wrapper.mjs')

const aedes = await Aedes.createBroker()
const listen = (server, p) => new Promise((resolve, reject) => {
  server.once('error', reject)
  server.listen(Number(p), '127.0.0.1', resolve)
})
await listen(createServer(aedes.handle), port)
if (Number(wsPort) > 0) {
  const http = createHttpServer()
  new WebSocketServer({ server: http }).on('connection', (ws, req) => {
    aedes.handle(createWebSocketStream(ws), req)
  })
  await listen(http, wsPort)
}
// The launcher waits for this line before probing the port.
console.log(`aedes ${aedes.id} running on ${port} (ws ${wsPort})`)
