// Token mode (`--auth token`) with real clients: the official Socket.IO
// clients (socket.io-client 4 from npm) with `auth.token` and `?token=`,
// refresh and expiry; and the chat page in headless Chromium, given its
// token in the URL fragment or a cookie, on every transport, and telling
// the user when the server refuses it.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { io } from 'socket.io-client';
import { Server, launchBrowser, say, uniqueChannel, waitForMessage, waitForState, within } from './support.mjs';

const SECRET = 'e2e secret for connection tokens';
const API_KEY = 'e2e-api-key';
const WAIT_MS = 10000;
const here = path.dirname(fileURLToPath(import.meta.url));
const socketIoClient = path.join(here, 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js');

const base64url = (text) => Buffer.from(text).toString('base64url');

/** An HS256 JWT, signed here with node:crypto. */
function mint(claims, secret = SECRET) {
  const head = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = base64url(JSON.stringify(claims));
  const signature = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${signature}`;
}

const now = () => Math.floor(Date.now() / 1000);

function tokenFor(sub, { ttl = 3600, subscribe = ['*'], publish = ['*'] } = {}) {
  return mint({ sub, exp: now() + ttl, subscribe, publish });
}

function once(socket, event) {
  return within(new Promise((resolve) => socket.once(event, (...args) => resolve(args))), event);
}

function ask(socket, event, payload) {
  return within(new Promise((resolve) => socket.emit(event, payload, resolve)), `${event} ack`);
}

describe('token mode', () => {
  let server;
  let browser;
  before(async () => {
    server = await Server.start([
      '--auth', 'token', '--token-hmac-secret', SECRET, '--api-key', API_KEY,
      '--socketio-client', socketIoClient,
    ]);
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  const client = (options) => io(server.url, { reconnection: false, forceNew: true, ...options });

  test('socket.io-client connects with auth.token as the token\'s user, within its patterns', async () => {
    const channel = uniqueChannel('sio-token');
    const socket = client({ auth: { token: tokenFor('ann', { subscribe: [channel], publish: [channel] }), user: 'mallory' } });
    try {
      await once(socket, 'connect');
      const joined = await ask(socket, 'join', { channel });
      assert.deepEqual(joined.presence, ['ann']);
      const ack = await ask(socket, 'publish', { channel, msg: 'hello' });
      assert.equal(ack.offset, 1);
      const refused = await ask(socket, 'join', { channel: 'elsewhere' });
      assert.equal(refused.error.code, 'forbidden');
      const notStored = await ask(socket, 'publish', { channel: 'elsewhere', msg: 'x' });
      assert.equal(notStored.error.code, 'forbidden');
      assert.equal(socket.connected, true);
      const history = await ask(socket, 'history', { channel });
      assert.deepEqual(history.messages.map((m) => [m.username, m.msg]), [['ann', 'hello']]);
    } finally {
      socket.disconnect();
    }
  });

  test('a missing or bad auth.token is a CONNECT_ERROR with its code; a bad ?token= is refused at the handshake', async () => {
    for (const [auth, code] of [
      [{}, 'missing_token'],
      [{ token: 'not.a.jwt' }, 'invalid_token'],
      [{ token: mint({ sub: 'ann', exp: now() + 60 }, 'wrong secret') }, 'invalid_token'],
      [{ token: tokenFor('ann', { ttl: 0 }) }, 'token_expired'],
      [{ token: tokenFor('ann', { subscribe: ['a'] }), channel: 'b' }, 'forbidden'],
    ]) {
      const socket = client({ auth });
      try {
        const [error] = await once(socket, 'connect_error');
        assert.equal(error.data?.code, code, `${JSON.stringify(auth)}: ${error.message}`);
      } finally {
        socket.disconnect();
      }
    }
    const response = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling&token=garbage`);
    assert.equal(response.status, 401);
    assert.equal((await response.json()).error.code, 'invalid_token');
    // A good ?token= at the handshake is enough on its own.
    const socket = client({ query: { token: tokenFor('qin') }, transports: ['polling'] });
    try {
      await once(socket, 'connect');
      const joined = await ask(socket, 'join', { channel: uniqueChannel('query-token') });
      assert.deepEqual(joined.presence, ['qin']);
    } finally {
      socket.disconnect();
    }
  });

  test('refresh keeps a session past its first expiry; expiry disconnects it for good', async () => {
    const channel = uniqueChannel('sio-refresh');
    for (const transports of [['websocket'], ['polling']]) {
      const socket = client({ transports, auth: { token: tokenFor('ray', { ttl: 2 }) } });
      try {
        await once(socket, 'connect');
        const refreshed = await ask(socket, 'refresh', { token: tokenFor('ray', { ttl: 60 }) });
        assert.ok(refreshed.exp > now() + 30, JSON.stringify(refreshed));
        const other = await ask(socket, 'refresh', { token: tokenFor('someone-else') });
        assert.equal(other.error.code, 'invalid_token');
        await new Promise((resolve) => setTimeout(resolve, 3000));
        assert.equal(socket.connected, true, transports.join());
        const ack = await ask(socket, 'publish', { channel, msg: `after refresh ${transports}` });
        assert.ok(ack.offset >= 1);
      } finally {
        socket.disconnect();
      }

      const brief = client({ transports, auth: { token: tokenFor('eve', { ttl: 2 }) } });
      try {
        await once(brief, 'connect');
        const started = Date.now();
        const [reason] = await once(brief, 'disconnect');
        assert.equal(reason, 'io server disconnect', transports.join());
        assert.ok(Date.now() - started < 4000);
      } finally {
        brief.disconnect();
      }
    }
  });

  for (const transport of ['websocket', 'sse', 'socketio']) {
    test(`the chat page signs in with a token from the URL fragment over ${transport}`, async () => {
      const channel = uniqueChannel(`page-${transport}`);
      const context = await browser.newContext();
      const page = await context.newPage();
      try {
        await page.addInitScript((chosen) => localStorage.setItem('switchboard.transport', chosen), transport);
        const token = tokenFor('tina', { subscribe: [channel], publish: [channel] });
        await page.goto(`${server.url}/#${channel}&token=${token}`);
        await waitForState(page, 'online');
        assert.equal(await page.textContent('#status-user'), 'tina');
        // The token left the address bar; the channel stayed.
        assert.equal(new URL(page.url()).hash, `#${channel}`);
        await say(page, `hi over ${transport}`);
        await waitForMessage(page, `hi over ${transport}`);
        const history = await fetch(`${server.url}/api/channels/${channel}/messages`, {
          headers: { Authorization: `apikey ${API_KEY}` },
        }).then((r) => r.json());
        assert.deepEqual(history.messages.map((m) => [m.username, m.msg]), [['tina', `hi over ${transport}`]]);
      } finally {
        await context.close();
      }
    });
  }

  test('the chat page takes a token cookie, and says so when its token expires', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    try {
      const url = new URL(server.url);
      await context.addCookies([{ name: 'token', value: tokenFor('cody', { ttl: 3 }), domain: url.hostname, path: '/' }]);
      await page.goto(`${server.url}/#${uniqueChannel('cookie')}`);
      await waitForState(page, 'online');
      assert.equal(await page.textContent('#status-user'), 'cody');
      await page.waitForSelector('#refused[data-code="token_expired"]', { timeout: WAIT_MS });
      assert.match(await page.textContent('#refused-reason'), /expired/);
    } finally {
      await context.close();
    }
  });

  test('the chat page without a token, or with a bad one, explains the refusal', async () => {
    for (const [fragment, code] of [['', 'missing_token'], ['#token=junk', 'invalid_token']]) {
      const context = await browser.newContext();
      const page = await context.newPage();
      try {
        await page.goto(`${server.url}/${fragment}`);
        await page.waitForSelector(`#refused[data-code="${code}"]`, { timeout: WAIT_MS });
        assert.equal(await page.isHidden('#join-form'), true);
        assert.equal(await page.isHidden('#chat-view'), true);
        await page.screenshot({ path: path.join(here, '..', 'target', 'e2e', `refused-${code}.png`) });
      } finally {
        await context.close();
      }
    }
  });
});
