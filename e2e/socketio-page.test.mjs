// The chat page's Socket.IO transport (the official browser client, served
// with --socketio-client) in real headless Chromium, chatting with a page on
// the native WebSocket transport.

import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import {
  Server,
  artifactDir,
  launchBrowser,
  openChat,
  publishOverHttp,
  say,
  shownMessages,
  shownPresence,
  uniqueChannel,
  waitForMessage,
  waitForState,
} from './support.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const client = path.join(here, 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js');

describe('chat page over Socket.IO', () => {
  let server;
  let browser;
  before(async () => {
    server = await Server.start(['--socketio-client', client]);
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test('a Socket.IO page and a WebSocket page chat both ways, with presence', async () => {
    const channel = uniqueChannel('mixed-page');
    const sio = await openChat(browser, server, 'sally', channel, { transport: 'socketio' });
    assert.equal(await sio.textContent('#status-transport'), 'Socket.IO');
    assert.equal(await sio.isVisible('#transport-socketio'), false, 'an option of the hidden form');
    const ws = await openChat(browser, server, 'wendy', channel, { transport: 'websocket' });
    await sio.waitForSelector('#presence-list li[data-username="wendy"]');
    await ws.waitForSelector('#presence-list li[data-username="sally"]');
    assert.deepEqual(await shownPresence(sio), ['sally', 'wendy']);

    await say(sio, 'hello from Socket.IO é ✓ 😀');
    await waitForMessage(ws, 'hello from Socket.IO é ✓ 😀');
    await say(ws, 'hello from WebSocket');
    await waitForMessage(sio, 'hello from WebSocket');
    const seenBySio = await shownMessages(sio);
    const seenByWs = await shownMessages(ws);
    assert.deepEqual(seenBySio.map((m) => [m.offset, m.username, m.text]), seenByWs.map((m) => [m.offset, m.username, m.text]));
    assert.deepEqual(seenBySio.map((m) => m.own), [true, false]);
    await sio.screenshot({ path: path.join(artifactDir, 'socketio-page.png') });

    // The WebSocket page leaves: the Socket.IO page sees it go.
    await ws.context().close();
    await sio.waitForSelector('#presence-list li[data-username="wendy"]', { state: 'detached' });
    assert.deepEqual(await sio.pageErrors, []);

    // A restart: the client reconnects by itself and the server recovers
    // its session, with what was published meanwhile, once each.
    await server.kill();
    await server.restart();
    await publishOverHttp(server, channel, 'api', 'while away 1');
    await publishOverHttp(server, channel, 'api', 'while away 2');
    await waitForMessage(sio, 'while away 2', 30000);
    await waitForState(sio, 'online');
    const offsets = (await shownMessages(sio)).map((m) => m.offset);
    assert.deepEqual(offsets, [1, 2, 3, 4]);
    await sio.context().close();
  });
});
