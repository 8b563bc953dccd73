// An aedes MQTT broker behind a WebSocket listener (ws), for the tests.
// Usage: node ws_broker.mjs PORT [PATH]; prints "ready PORT" once listening.
import { createServer } from 'node:http'
import { Aedes } from 'aedes'
import { WebSocketServer, createWebSocketStream } from 'ws'

const port = Number(process.argv[2] || 0)
const path = process.argv[3] || '/mqtt'
const broker = await Aedes.createBroker()
const server = createServer()
const wss = new WebSocketServer({
  server,
  path,
  handleProtocols: (protocols) => (protocols.has('mqtt') ? 'mqtt' : false),
})
wss.on('connection', (ws) => broker.handle(createWebSocketStream(ws)))
server.listen(port, '127.0.0.1', () => console.log(`ready ${server.address().port}`))
