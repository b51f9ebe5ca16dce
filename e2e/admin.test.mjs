// The admin page (/admin) in real headless Chromium against a real server:
// behind its password, it shows connections, rates, channels and presence,
// publishes, and disconnects a user.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  Server,
  launchBrowser,
  openChat,
  publishOverHttp,
  uniqueChannel,
  waitForMessage,
  waitForState,
} from './support.mjs';

const PASSWORD = 'correct horse battery staple';

describe('admin page', () => {
  let server;
  let closed;
  let browser;
  before(async () => {
    server = await Server.start(['--admin-password', PASSWORD]);
    closed = await Server.start();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    await closed?.stop();
  });

  test('it is off without a password, and refuses a wrong one', async () => {
    const off = await fetch(`${closed.url}/admin`);
    assert.equal(off.status, 404);
    assert.equal((await off.json()).error.code, 'not_found');
    const anonymous = await fetch(`${server.url}/admin/api/overview`);
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate'), /^Basic realm="switchboard admin"/);
    const wrong = await fetch(`${server.url}/admin/api/overview`, {
      headers: { Authorization: `Basic ${Buffer.from('admin:guess').toString('base64')}` },
    });
    assert.equal(wrong.status, 401);
    // Bad input behind the password: JSON errors, the server goes on.
    const auth = { Authorization: `Basic ${Buffer.from(`admin:${PASSWORD}`).toString('base64')}` };
    for (const [body, code] of [['{not json', 'malformed_json'], ['{"msg":"x"}', 'bad_request']]) {
      const refused = await fetch(`${server.url}/admin/api/channels/lobby/messages`, {
        method: 'POST',
        headers: { ...auth, 'Content-Type': 'application/json' },
        body,
      });
      assert.equal(refused.status, 400, body);
      assert.equal((await refused.json()).error.code, code);
    }
    const badUser = await fetch(`${server.url}/admin/api/users/${encodeURIComponent(' x ')}/disconnect`, { method: 'POST', headers: auth });
    assert.equal(badUser.status, 400);
    assert.equal((await badUser.json()).error.code, 'invalid_username');
    assert.equal((await fetch(`${server.url}/admin/api/overview`, { headers: auth })).status, 200);
    const context = await browser.newContext({ httpCredentials: { username: 'admin', password: 'guess' } });
    const page = await context.newPage();
    const response = await page.goto(`${server.url}/admin`);
    assert.equal(response.status(), 401);
    await context.close();
  });

  test('shows connections, rates, channels and presence; publishes; disconnects a user', async () => {
    const channel = uniqueChannel('admin');
    const alice = await openChat(browser, server, 'alice', channel);
    const bob = await openChat(browser, server, 'bob', channel, { transport: 'sse' });

    const context = await browser.newContext({ httpCredentials: { username: 'ops', password: PASSWORD } });
    const admin = await context.newPage();
    const errors = [];
    admin.on('pageerror', (error) => errors.push(error.message));
    await admin.goto(`${server.url}/admin`);
    await admin.waitForSelector('#status[data-state="live"]');

    // Connections by transport, from the metrics.
    await admin.waitForFunction(() => Number(document.getElementById('connections-websocket').textContent) >= 1);
    await admin.waitForFunction(() => Number(document.getElementById('connections-sse').textContent) >= 1);

    // The channel, with both users online.
    const row = `#channels tr[data-channel="${channel}"]`;
    await admin.waitForSelector(`${row} li[data-username="alice"]`);
    await admin.waitForSelector(`${row} li[data-username="bob"]`);

    // Messages per second follow a burst over the HTTP API.
    for (let i = 0; i < 20; i += 1) await publishOverHttp(server, channel, 'bot', `burst ${i}`);
    await admin.waitForFunction(() => Number(document.getElementById('published-rate').textContent) > 0);
    await admin.waitForFunction(() => Number(document.getElementById('delivered-rate').textContent) > 0);

    // The publish box: the chat pages get it.
    await admin.fill('#publish-channel', channel);
    await admin.fill('#publish-username', 'operator');
    await admin.fill('#publish-msg', 'maintenance at noon');
    await admin.click('#publish button[type=submit]');
    await admin.waitForSelector('#publish-result:has-text("published to")');
    await waitForMessage(alice, 'maintenance at noon');
    await waitForMessage(bob, 'maintenance at noon');

    // Disconnect alice: her page loses its connection (1008) and the
    // others see her leave.
    await admin.click(`${row} li[data-username="alice"] button.disconnect`);
    await admin.waitForSelector('#publish-result:has-text("alice: 1 connection(s) closed")');
    await alice.waitForFunction(() =>
      [...document.querySelectorAll('#event-log li')].some((li) => li.textContent.includes('close 1008 disconnected by an administrator')));
    await waitForState(bob, 'online');
    assert.deepEqual(errors, []);

    await context.close();
    await alice.context().close();
    await bob.context().close();
  });
});
