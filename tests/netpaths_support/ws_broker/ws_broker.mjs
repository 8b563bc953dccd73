// An aedes MQTT broker behind a WebSocket listener (ws), for the tests.
// Usage: node ws_broker.mjs PORT [PATH [CERT_PEM KEY_PEM]]; with a certificate
// and key it listens with TLS (wss). Prints "ready PORT" once listening.
// WS_BROKER_HOST: the address to listen on (default 127.0.0.1).
import { createServer } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import { readFileSync } from 'node:fs'
import { Aedes } from 'aedes'
import { WebSocketServer, createWebSocketStream } from 'ws'

const [portArg, pathArg, certPath, keyPath] = process.argv.slice(2)
const port = Number(portArg || 0)
const path = pathArg || '/mqtt'
const broker = await Aedes.createBroker()
const server = certPath
  ? createTlsServer({ cert: readFileSync(certPath), key: readFileSync(keyPath) })
  : createServer()
const wss = new WebSocketServer({
  server,
  path,
  handleProtocols: (protocols) => (protocols.has('mqtt') ? 'mqtt' : false),
})
wss.on('connection', (ws) => broker.handle(createWebSocketStream(ws)))
server.listen(port, process.env.WS_BROKER_HOST || '127.0.0.1', () => console.log(`ready ${server.address().port}`))
