// A peer for the benchmarks: the Socket.IO server an application would write
// with the Node `socket.io` package, speaking switchboard's event contract as
// far as the load tool uses it. Clients `join {channel}` (ack
// `{channel, offset}`) and `publish {channel, msg}` (ack `{channel, offset}`);
// every member of the channel's room gets
// `message {channel, offset, username, msg, time}`, offsets counted per
// channel (no history).
//
//   node server.js --listen 127.0.0.1:0 [--redis redis://127.0.0.1:6379]
//
// With --redis, several such servers act as one the way Socket.IO's own
// documentation shows: `@socket.io/redis-adapter` broadcasts between them,
// and a channel's offsets come from Redis (INCR), so every server counts
// one sequence per channel.

import { createServer } from 'node:http';
import { Server } from 'socket.io';

const argument = (name) => {
  const at = process.argv.indexOf(name);
  return at < 0 ? undefined : process.argv[at + 1];
};
const listen = argument('--listen') ?? '127.0.0.1:0';
const redisUrl = argument('--redis');
const [host, port] = listen.split(':');
const httpServer = createServer();
const io = new Server(httpServer);

let nextOffset;
let lastOffset;
if (redisUrl) {
  const { createClient } = await import('redis');
  const { createAdapter } = await import('@socket.io/redis-adapter');
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
  nextOffset = (channel) => pub.incr(`offset:${channel}`);
  lastOffset = async (channel) => Number((await pub.get(`offset:${channel}`)) ?? 0);
} else {
  const offsets = new Map();
  nextOffset = async (channel) => {
    const offset = (offsets.get(channel) ?? 0) + 1;
    offsets.set(channel, offset);
    return offset;
  };
  lastOffset = async (channel) => offsets.get(channel) ?? 0;
}

io.on('connection', (socket) => {
  const user = socket.handshake.auth?.user ?? socket.handshake.query.user ?? 'guest';
  socket.on('join', async ({ channel }, ack) => {
    socket.join(channel);
    ack?.({ channel, offset: await lastOffset(channel) });
  });
  socket.on('publish', async ({ channel, msg }, ack) => {
    const offset = await nextOffset(channel);
    io.to(channel).emit('message', { channel, offset, username: user, msg, time: new Date().toISOString() });
    ack?.({ channel, offset });
  });
});

httpServer.listen(Number(port), host, () => {
  const { address, port: bound } = httpServer.address();
  console.log(`listening on http://${address}:${bound}`);
});
