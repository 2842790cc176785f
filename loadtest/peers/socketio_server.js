// Peer: Node socket.io 4.8, one process, io.emit() (socket.io precomputes the broadcast frame).
'use strict';
const http = require('http');
const { Server } = require('socket.io');
const { control } = require('./common');

const port = Number(process.argv[2] || process.env.PORT || 8092);
const server = http.createServer();
const io = new Server(server, { transports: ['websocket'], perMessageDeflate: false, httpCompression: false,
  serveClient: false, pingInterval: 25000, pingTimeout: 20000 });
control(server, () => io.engine.clientsCount, (msg) => io.emit('announcement', JSON.parse(msg)));
server.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => console.log(`socket.io peer on ${port}`));
