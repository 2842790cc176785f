// Peer: Node `ws`, one process, ws.send(str) to every client (ws frames per client).
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');
const { control } = require('./common');

const port = Number(process.argv[2] || process.env.PORT || 8091);
const server = http.createServer();
const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false });
control(server, () => wss.clients.size, (msg) => { for (const c of wss.clients) c.send(msg); });
server.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => console.log(`ws peer on ${port}`));
