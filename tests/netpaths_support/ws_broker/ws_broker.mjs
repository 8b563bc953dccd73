// An aedes MQTT broker behind a WebSocket listener (ws), for the tests.
// Usage: node ws_broker.mjs PORT [PATH [CERT_PEM KEY_PEM]]; with a certificate
// and key it listens with TLS (wss). Prints "ready PORT" once listening.
// WS_BROKER_HOST: the address to listen on (default 127.0.0.1).
// WS_BROKER_TCP_PORT: also a plain MQTT (TCP) listener for the same broker, on
// that port (0: any); it then prints "ready PORT TCP_PORT" (bench/run.sh --ws).
import { createServer } from 'node:http'
import { createServer as createNetServer } from 'node:net'
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
const host = process.env.WS_BROKER_HOST || '127.0.0.1'
const tcpPort = process.env.WS_BROKER_TCP_PORT
server.listen(port, host, () => {
  if (tcpPort === undefined || tcpPort === '') {
    console.log(`ready ${server.address().port}`)
    return
  }
  const tcp = createNetServer(broker.handle)
  tcp.listen(Number(tcpPort), host, () =>
    console.log(`ready ${server.address().port} ${tcp.address().port}`))
})
