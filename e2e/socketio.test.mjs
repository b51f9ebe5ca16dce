// Socket.IO with the official clients from npm: socket.io-client 4 (Engine.IO 4)
// and socket.io-client 2 (Engine.IO 3), on every transport, in the same
// channels as native WebSocket and SSE clients.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { io } from 'socket.io-client';
import ioV2 from 'socket.io-client-v2';
import WebSocket from 'ws';
import { Server, publishOverHttp, uniqueChannel, within } from './support.mjs';

const TRANSPORTS = {
  websocket: ['websocket'],
  polling: ['polling'],
  upgrade: ['polling', 'websocket'],
};
const WAIT_MS = 10000;
const here = path.dirname(fileURLToPath(import.meta.url));
/** The venv scripts/test.sh makes, with python-socketio in it. */
const python = process.env.SWITCHBOARD_PYTHON ?? path.join(here, '..', 'target', 'py-venv', 'bin', 'python');

/** Runs e2e/python/socketio_client.py; resolves with its JSON lines. */
function pythonClient(server, user, channel, transport, count) {
  const child = spawn(python, [path.join(here, 'python', 'socketio_client.py'), server.url, user, channel, transport, String(count)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = [];
  let buffer = '';
  child.stdout.on('data', (chunk) => {
    buffer += chunk.toString();
    let end;
    while ((end = buffer.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buffer.slice(0, end)));
      buffer = buffer.slice(end + 1);
    }
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return { lines, exited: () => within(exited, 'the python client', 40000) };
}

/** A v4 client as a page would open it. */
function clientV4(server, user, transports, extra = {}) {
  return io(server.url, { transports, auth: { user }, reconnection: false, forceNew: true, ...extra });
}

/** A v2 client: who it is travels in the query string. */
function clientV2(server, user, transports, query = {}) {
  return ioV2(server.url, { transports, query: { user, ...query }, reconnection: false, forceNew: true });
}

function once(socket, event) {
  return within(new Promise((resolve) => socket.once(event, (...args) => resolve(args))), event);
}

/** Emits and waits for the acknowledgement (v2 and v4 alike). */
function request(socket, event, payload) {
  return within(new Promise((resolve) => socket.emit(event, payload, resolve)), `the ack of ${event}`);
}

/** Collects `message` events' objects until `count` arrived. */
function collect(socket, count) {
  const seen = [];
  const done = new Promise((resolve) => {
    socket.on('message', (message) => {
      seen.push(message);
      if (seen.length === count) resolve(seen);
    });
  });
  return { seen, done: () => within(done, `${count} messages (have ${seen.length})`, 30000) };
}

/** A native /ws client subscribed to `channel`; resolves once subscribed. */
async function nativeClient(server, user, channel) {
  const ws = new WebSocket(`ws://${server.address}/ws?user=${user}`);
  const messages = [];
  const subscribed = new Promise((resolve, reject) => {
    ws.on('error', reject);
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === 'subscribed') resolve();
      if (frame.type === 'message') messages.push(frame);
    });
  });
  await within(new Promise((resolve) => ws.once('open', resolve)), 'the native socket');
  ws.send(JSON.stringify({ type: 'subscribe', channel }));
  await within(subscribed, 'subscribed');
  return { ws, messages };
}

/** An SSE stream of `channel`; its `message` events' data, parsed. */
async function sseStream(server, channel) {
  const controller = new AbortController();
  const response = await fetch(`${server.url}/sse?channel=${channel}`, { signal: controller.signal });
  const messages = [];
  let ready;
  const presence = new Promise((resolve) => (ready = resolve));
  (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of response.body) {
        buffer += decoder.decode(chunk, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event === 'presence') ready();
          if (event === 'message') messages.push(JSON.parse(data));
        }
      }
    } catch {
      // Aborted at the end of the test.
    }
  })();
  await within(presence, 'the SSE stream');
  return { messages, close: () => controller.abort() };
}

async function until(condition, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('Socket.IO with the official clients', () => {
  let server;
  before(async () => {
    // The burst test publishes 500 messages from one client at once.
    server = await Server.start(['--publish-burst', '1000']);
  });
  after(async () => {
    await server?.stop();
  });

  for (const [name, transports] of Object.entries(TRANSPORTS)) {
    test(`socket.io-client 4 over ${name}: join, publish with a stored offset, history`, async () => {
      const channel = uniqueChannel(`v4-${name}`);
      const socket = clientV4(server, 'alice', transports);
      try {
        await once(socket, 'connect');
        const joined = await request(socket, 'join', { channel });
        assert.equal(joined.channel, channel);
        assert.deepEqual(joined.presence, ['alice']);
        assert.equal(joined.offset, 0);
        assert.match(joined.epoch, /^[0-9a-f]+$/);
        const arrived = once(socket, 'message');
        const ack = await request(socket, 'publish', { channel, msg: 'hello from v4' });
        assert.deepEqual(Object.keys(ack).sort(), ['channel', 'offset', 'time']);
        assert.equal(ack.offset, 1);
        const [message] = await arrived;
        assert.deepEqual(message, { channel, offset: 1, username: 'alice', msg: 'hello from v4', time: ack.time });
        const history = await request(socket, 'history', { channel });
        assert.deepEqual(history.messages, [message]);
        if (name === 'upgrade') await until(() => socket.io.engine.transport.name === 'websocket', 'the upgrade');
        assert.equal(socket.io.engine.transport.name, transports.at(-1));
        const failed = await request(socket, 'publish', { channel: 'no spaces', msg: 'x' });
        assert.equal(failed.error.code, 'invalid_channel');
      } finally {
        socket.close();
      }
    });

    test(`socket.io-client 2 over ${name}: the channel named at connect, publish, leave`, async () => {
      const channel = uniqueChannel(`v2-${name}`);
      const socket = clientV2(server, 'bob', transports, { channel });
      try {
        await once(socket, 'connect');
        const arrived = once(socket, 'message');
        const joined = await request(socket, 'join', { channel });
        assert.deepEqual(joined.presence, ['bob'], 'joining again is answered the same');
        const ack = await request(socket, 'publish', { channel, msg: 'hello from v2' });
        const [message] = await arrived;
        assert.equal(message.offset, ack.offset);
        assert.equal(message.msg, 'hello from v2');
        assert.deepEqual(await request(socket, 'leave', { channel }), { channel });
        if (name === 'upgrade') await until(() => socket.io.engine.transport.name === 'websocket', 'the upgrade');
        assert.equal(socket.io.engine.transport.name, transports.at(-1));
      } finally {
        socket.close();
      }
    });
  }

  test('v2, v4, native WebSocket and SSE clients in one channel see the same messages in the same order', async () => {
    const channel = uniqueChannel('mixed');
    const v4 = clientV4(server, 'vera', ['websocket']);
    const v2 = clientV2(server, 'walt', ['polling']);
    await Promise.all([once(v4, 'connect'), once(v2, 'connect')]);
    await request(v4, 'join', { channel });
    await request(v2, 'join', { channel });
    const native = await nativeClient(server, 'nina', channel);
    const sse = await sseStream(server, channel);
    const perSender = 20;
    const total = perSender * 3;
    const v4Seen = collect(v4, total);
    const v2Seen = collect(v2, total);
    try {
      const acks = await Promise.all([
        ...Array.from({ length: perSender }, (_, i) => request(v4, 'publish', { channel, msg: `v4 ${i}` })),
        ...Array.from({ length: perSender }, (_, i) => request(v2, 'publish', { channel, msg: `v2 ${i}` })),
        ...Array.from({ length: perSender }, (_, i) => {
          native.ws.send(JSON.stringify({ type: 'publish', channel, msg: `native ${i}` }));
          return null;
        }),
      ]);
      const fromV4 = await v4Seen.done();
      const fromV2 = await v2Seen.done();
      await until(() => native.messages.length === total && sse.messages.length === total, 'native and SSE');
      const order = (messages) => messages.map((m) => `${m.offset}:${m.username}:${m.msg}`);
      assert.deepEqual(fromV4.map((m) => m.offset), Array.from({ length: total }, (_, i) => i + 1));
      assert.deepEqual(order(fromV2), order(fromV4));
      assert.deepEqual(order(native.messages), order(fromV4));
      assert.deepEqual(order(sse.messages), order(fromV4));
      // Each ack names the offset its message was delivered under.
      for (const ack of acks.filter(Boolean)) {
        const delivered = fromV4.find((m) => m.offset === ack.offset);
        assert.ok(delivered, `offset ${ack.offset} was delivered`);
      }
    } finally {
      v4.close();
      v2.close();
      native.ws.close();
      sse.close();
    }
  });

  test('a 500-message burst over polling arrives complete and in order at polling and WebSocket receivers of both versions', async () => {
    const channel = uniqueChannel('burst');
    const sender = clientV4(server, 'sam', ['polling'], { auth: { user: 'sam', channel } });
    const receivers = [
      clientV4(server, 'r4p', ['polling'], { auth: { user: 'r4p', channel } }),
      clientV4(server, 'r4w', ['websocket'], { auth: { user: 'r4w', channel } }),
      clientV2(server, 'r2p', ['polling'], { channel }),
      clientV2(server, 'r2w', ['websocket'], { channel }),
    ];
    const count = 500;
    const sockets = [sender, ...receivers];
    try {
      await Promise.all(sockets.map((s) => once(s, 'connect')));
      // Joined at connect: a join again is acked once the channel is live.
      for (const socket of sockets) await request(socket, 'join', { channel });
      const collected = receivers.map((r) => collect(r, count));
      const acks = await Promise.all(
        Array.from({ length: count }, (_, i) => request(sender, 'publish', { channel, msg: `burst ${i}` })),
      );
      assert.deepEqual(acks.map((a) => a.offset).sort((a, b) => a - b), Array.from({ length: count }, (_, i) => i + 1));
      for (const [i, c] of collected.entries()) {
        const seen = await c.done();
        assert.deepEqual(seen.map((m) => m.offset), Array.from({ length: count }, (_, n) => n + 1), `receiver ${i}`);
        assert.deepEqual(
          seen.map((m) => m.msg).sort(),
          Array.from({ length: count }, (_, n) => `burst ${n}`).sort(),
          `receiver ${i}`,
        );
      }
    } finally {
      sockets.forEach((s) => s.close());
    }
  });

  test('text with é ✓ 😀 crosses v3 polling intact', async () => {
    const channel = uniqueChannel('unicode');
    const v2 = clientV2(server, 'ümit', ['polling'], { channel });
    const v4 = clientV4(server, 'olga', ['websocket'], { auth: { user: 'olga', channel } });
    try {
      await Promise.all([once(v2, 'connect'), once(v4, 'connect')]);
      await request(v2, 'join', { channel });
      await request(v4, 'join', { channel });
      const text = 'é ✓ 😀 — ünïcödé';
      const atV2 = once(v2, 'message');
      const atV4 = once(v4, 'message');
      await request(v2, 'publish', { channel, msg: text });
      assert.equal((await atV2)[0].msg, text);
      assert.equal((await atV4)[0].msg, text);
      const back = once(v2, 'message');
      await request(v4, 'publish', { channel, msg: `${text} back` });
      assert.equal((await back)[0].msg, `${text} back`);
    } finally {
      v2.close();
      v4.close();
    }
  });

  test('join {since} replays exactly the missed messages, then live ones', async () => {
    const channel = uniqueChannel('since');
    for (let i = 1; i <= 3; i++) await publishOverHttp(server, channel, 'api', `before ${i}`);
    const first = clientV4(server, 'rita', ['websocket']);
    await once(first, 'connect');
    // Replayed messages follow the ack at once: listen before joining.
    const replayed = collect(first, 3);
    const joined = await request(first, 'join', { channel, since: 0 });
    assert.equal(joined.offset, 3);
    assert.deepEqual((await replayed.done()).map((m) => m.msg), ['before 1', 'before 2', 'before 3']);
    first.close();

    let last = 3;
    for (const [name, transports] of Object.entries(TRANSPORTS)) {
      // Three messages while away, then back over each transport.
      const missed = [];
      for (let i = 1; i <= 3; i++) missed.push(await publishOverHttp(server, channel, 'api', `missed ${name} ${i}`));
      const again = name === 'polling' ? clientV2(server, 'rita', transports) : clientV4(server, 'rita', transports);
      try {
        await once(again, 'connect');
        const seen = collect(again, 4);
        const ack = await request(again, 'join', { channel, since: last });
        assert.equal(ack.offset, missed.at(-1));
        const live = await publishOverHttp(server, channel, 'api', `live after ${name}`);
        const messages = await seen.done();
        assert.deepEqual(
          messages.map((m) => m.offset),
          [...missed, live],
          `${name}: the missed messages, then the live one, once each`,
        );
        // A second join of the same channel replays nothing.
        const repeat = await request(again, 'join', { channel, since: last });
        assert.equal(repeat.offset, live);
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.equal(seen.seen.length, 4, `${name}: nothing twice`);
        last = live;
      } finally {
        again.close();
      }
    }
  });

  test('presence: others join and leave, counted once per user across transports', async () => {
    const channel = uniqueChannel('presence');
    const alice = clientV4(server, 'alice', ['websocket']);
    await once(alice, 'connect');
    await request(alice, 'join', { channel });
    const joins = [];
    const leaves = [];
    alice.on('join', (event) => joins.push(event));
    alice.on('leave', (event) => leaves.push(event));
    // Bob twice: over Socket.IO polling and over the native protocol.
    const bobSio = clientV2(server, 'bob', ['polling'], { channel });
    await once(bobSio, 'connect');
    await until(() => joins.length === 1, 'the join of bob');
    const bobNative = await nativeClient(server, 'bob', channel);
    const presence = await request(alice, 'presence', { channel });
    assert.deepEqual(presence.users, ['alice', 'bob']);
    bobSio.close();
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(leaves.length, 0, 'bob is still there over /ws');
    bobNative.ws.close();
    await until(() => leaves.length === 1, 'the leave of bob');
    assert.deepEqual(joins, [{ channel, username: 'bob' }]);
    assert.deepEqual(leaves, [{ channel, username: 'bob' }]);
    alice.close();
  });

  for (const transport of ['websocket', 'polling', 'upgrade']) {
    test(`python-socketio over ${transport} chats with socket.io-client 4: the same messages under the same offsets`, async () => {
      const channel = uniqueChannel(`python-${transport}`);
      const count = 5;
      const js = clientV4(server, 'jess', ['websocket']);
      await once(js, 'connect');
      await request(js, 'join', { channel });
      const seen = collect(js, 2 * count);
      const joined = once(js, 'join');
      const py = pythonClient(server, 'pyotr', channel, transport, count);
      await joined;
      for (let i = 0; i < count; i++) await request(js, 'publish', { channel, msg: `js ${i}` });
      assert.equal(await py.exited(), 0);
      const fromJs = await seen.done();
      js.close();
      const pyMessages = py.lines.filter((l) => l.message).map((l) => l.message);
      assert.ok(py.lines.some((l) => l.done) && !py.lines.some((l) => l.timeout), JSON.stringify(py.lines));
      assert.deepEqual(py.lines.find((l) => l.join).join.presence, ['jess', 'pyotr']);
      // python-socketio hands every argument to the handler: the message,
      // then the recovery offset (see docs/protocol.md).
      for (const [message, offset, ...rest] of pyMessages) {
        assert.equal(offset, `${channel}:${message.offset}`);
        assert.deepEqual(rest, []);
      }
      // python-engineio runs each message handler on a thread of its own,
      // so handlers may run out of the order the events arrived in: the
      // python client's view is compared by offset, socket.io-client's
      // (one thread) as it arrived, which is offset order.
      const byOffset = (a, b) => Number(a.split(':')[0]) - Number(b.split(':')[0]);
      assert.deepEqual(
        pyMessages.map(([m]) => `${m.offset}:${m.msg}`).sort(byOffset),
        fromJs.map((m) => `${m.offset}:${m.msg}`),
      );
      // Upgraded by the end, if it started polling to upgrade.
      const expected = transport === 'polling' ? 'polling' : 'websocket';
      assert.equal(py.lines.find((l) => l.transport).transport, expected);
      const acks = py.lines.filter((l) => l.ack).map((l) => l.ack.offset);
      assert.equal(acks.length, count);
      for (const offset of acks) assert.ok(fromJs.some((m) => m.offset === offset && m.username === 'pyotr'));
    });
  }

  test('a namespace that does not exist is refused with a clear message', async () => {
    const socket = io(`${server.url}/admin`, { transports: ['websocket'], reconnection: false });
    try {
      const [error] = await once(socket, 'connect_error');
      assert.match(error.message, /namespace \/admin does not exist/);
    } finally {
      socket.close();
    }
  });
});

describe('connection-state recovery with socket.io-client 4', () => {
  let server;
  before(async () => {
    server = await Server.start();
  });
  after(async () => {
    await server?.stop();
  });

  /** A client that reconnects at once; collects every message event's arguments. */
  function recovering(user) {
    const socket = io(server.url, {
      transports: ['websocket'],
      auth: { user },
      forceNew: true,
      reconnectionDelay: 50,
      reconnectionDelayMax: 200,
    });
    const events = [];
    socket.on('message', (...args) => events.push(args));
    return { socket, events };
  }

  /** Drops the client's transport; resolves once it noticed. The client
   *  reconnects on its own. */
  async function drop(socket) {
    const gone = once(socket, 'disconnect');
    socket.io.engine.close();
    await gone;
  }

  test('a dropped transport: recovered, every missed message once, in several channels', async () => {
    const [a, b] = [uniqueChannel('rec-a'), uniqueChannel('rec-b')];
    const { socket, events } = recovering('rosa');
    try {
      await once(socket, 'connect');
      assert.equal(socket.recovered, false);
      await request(socket, 'join', { channel: a });
      await request(socket, 'join', { channel: b });
      await publishOverHttp(server, a, 'api', 'a1');
      await publishOverHttp(server, b, 'api', 'b1');
      await until(() => events.length === 2, 'two messages');
      // Each event ends with the session's position in both channels.
      assert.equal(events[1].at(-1), `${a}:1,${b}:1`);

      await drop(socket);
      const back = once(socket, 'connect');
      for (const msg of ['a2', 'a3']) await publishOverHttp(server, a, 'api', msg);
      for (const msg of ['b2', 'b3']) await publishOverHttp(server, b, 'api', msg);
      await back;
      assert.equal(socket.recovered, true);
      await until(() => events.length === 6, 'the four missed messages');
      await publishOverHttp(server, a, 'api', 'a4');
      await until(() => events.length === 7, 'a live message');
      await new Promise((resolve) => setTimeout(resolve, 200));
      const seen = events.map(([m]) => `${m.channel === a ? 'a' : 'b'}:${m.msg}`);
      assert.deepEqual(seen.slice(0, 2), ['a:a1', 'b:b1']);
      assert.deepEqual(seen.slice(2, 6).filter((s) => s.startsWith('a')), ['a:a2', 'a:a3']);
      assert.deepEqual(seen.slice(2, 6).filter((s) => s.startsWith('b')), ['b:b2', 'b:b3']);
      assert.deepEqual(seen.slice(6), ['a:a4']);
    } finally {
      socket.close();
    }
  });

  test('recovered from the first event on: a session that received nothing yet', async () => {
    const channel = uniqueChannel('rec-first');
    const { socket, events } = recovering('fred');
    try {
      await once(socket, 'connect');
      await request(socket, 'join', { channel });
      await drop(socket);
      const back = once(socket, 'connect');
      await publishOverHttp(server, channel, 'api', 'while away');
      await back;
      assert.equal(socket.recovered, true);
      await until(() => events.length === 1, 'the missed message');
      assert.equal(events[0][0].msg, 'while away');
    } finally {
      socket.close();
    }
  });

  test('after a server restart: recovered, and nothing missed', async () => {
    const channel = uniqueChannel('rec-restart');
    const { socket, events } = recovering('rhea');
    try {
      await once(socket, 'connect');
      await request(socket, 'join', { channel });
      await publishOverHttp(server, channel, 'api', 'before');
      await until(() => events.length === 1, 'the first message');
      const gone = once(socket, 'disconnect');
      await server.kill();
      await gone;
      const back = once(socket, 'connect');
      await server.restart();
      for (const msg of ['after 1', 'after 2']) await publishOverHttp(server, channel, 'api', msg);
      await back;
      assert.equal(socket.recovered, true);
      await until(() => events.length === 3, 'the missed messages');
      assert.deepEqual(events.map(([m]) => m.msg), ['before', 'after 1', 'after 2']);
      assert.deepEqual(events.map(([m]) => m.offset), [1, 2, 3]);
    } finally {
      socket.close();
    }
  });
});

describe('--socketio-recovery off', () => {
  let server;
  before(async () => {
    server = await Server.start(['--socketio-recovery', 'off']);
  });
  after(async () => {
    await server?.stop();
  });

  test('events carry the message alone and a reconnect is not recovered', async () => {
    const channel = uniqueChannel('no-rec');
    const socket = io(server.url, { transports: ['websocket'], auth: { user: 'nora', channel }, forceNew: true, reconnectionDelay: 50 });
    const events = [];
    socket.on('message', (...args) => events.push(args));
    try {
      await once(socket, 'connect');
      await request(socket, 'join', { channel });
      await publishOverHttp(server, channel, 'api', 'plain');
      await until(() => events.length === 1, 'the message');
      assert.equal(events[0].length, 1);
      const back = once(socket, 'connect');
      socket.io.engine.close();
      await back;
      assert.ok(!socket.recovered);
    } finally {
      socket.close();
    }
  });
});

describe('--idle-timeout with socket.io-client 4', () => {
  let server;
  before(async () => {
    server = await Server.start(['--idle-timeout', '800ms', '--ping-interval', '300ms']);
  });
  after(async () => {
    await server?.stop();
  });

  for (const transports of [['polling'], ['websocket']]) {
    test(`over ${transports[0]}: a session in no channel is disconnected by the server, one in a channel stays`, async () => {
      const channel = uniqueChannel('idle');
      // Reconnection on: a server disconnect is the kind it does not retry.
      const idle = io(server.url, { transports, auth: { user: 'ida' }, forceNew: true, reconnectionDelay: 50 });
      const busy = io(server.url, { transports, auth: { user: 'bea', channel }, forceNew: true, reconnectionDelay: 50 });
      try {
        const started = Date.now();
        const gone = once(idle, 'disconnect');
        await once(busy, 'connect');
        const [reason] = await gone;
        assert.equal(reason, 'io server disconnect');
        assert.ok(Date.now() - started >= 800, `disconnected after ${Date.now() - started} ms`);
        // Well past the timeout, the subscribed one still chats.
        await new Promise((resolve) => setTimeout(resolve, 1200));
        assert.equal(busy.connected, true);
        const ack = await request(busy, 'publish', { channel, msg: 'still here' });
        assert.ok(ack.offset >= 1, JSON.stringify(ack));
        assert.equal(idle.connected, false);
      } finally {
        idle.close();
        busy.close();
      }
    });
  }
});
