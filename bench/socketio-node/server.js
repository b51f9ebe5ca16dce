// A peer for the benchmarks: the Socket.IO server an application would write
// with the Node `socket.io` package, speaking switchboard's event contract as
// far as the load tool uses it. Clients `join {channel}` (ack
// `{channel, offset}`) and `publish {channel, msg}` (ack `{channel, offset}`);
// every member of the channel's room gets
// `message {channel, offset, username, msg, time}`, offsets counted per
// channel in memory (no history).
//
//   node server.js --listen 127.0.0.1:0

import { createServer } from 'node:http';
import { Server } from 'socket.io';

const listen = process.argv[process.argv.indexOf('--listen') + 1] ?? '127.0.0.1:0';
const [host, port] = listen.split(':');
const httpServer = createServer();
const io = new Server(httpServer);
const offsets = new Map();

io.on('connection', (socket) => {
  const user = socket.handshake.auth?.user ?? socket.handshake.query.user ?? 'guest';
  socket.on('join', ({ channel }, ack) => {
    socket.join(channel);
    ack?.({ channel, offset: offsets.get(channel) ?? 0 });
  });
  socket.on('publish', ({ channel, msg }, ack) => {
    const offset = (offsets.get(channel) ?? 0) + 1;
    offsets.set(channel, offset);
    io.to(channel).emit('message', { channel, offset, username: user, msg, time: new Date().toISOString() });
    ack?.({ channel, offset });
  });
});

httpServer.listen(Number(port), host, () => {
  const { address, port: bound } = httpServer.address();
  console.log(`listening on http://${address}:${bound}`);
});
