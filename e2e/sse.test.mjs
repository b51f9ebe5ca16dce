// The chat page's SSE mode (EventSource + POST) and EventSource resume, in
// real headless Chromium against a real server.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  historyOf,
  openChat,
  publishOverHttp,
  say,
  serverAndBrowser,
  shownMessages,
  shownPresence,
  uniqueChannel,
  waitForMessage,
  waitForState,
} from './support.mjs';

describe('chat page over SSE + POST', () => {
  const env = serverAndBrowser();

  test('an SSE page and a WebSocket page chat with each other', async () => {
    const channel = uniqueChannel('mixed');
    await publishOverHttp(env.server, channel, 'earlier', 'from before anyone came');
    const sse = await openChat(env.browser, env.server, 'sally', channel, { transport: 'sse' });
    const ws = await openChat(env.browser, env.server, 'walt', channel, { transport: 'websocket' });
    assert.equal(await sse.textContent('#status-transport'), 'SSE + POST');
    assert.equal(await ws.textContent('#status-transport'), 'WebSocket');
    await waitForMessage(sse, 'from before anyone came');

    // Presence: the named SSE stream is online, and sees walt arrive.
    await sse.waitForSelector('#presence-list li[data-username="walt"]');
    assert.deepEqual(await shownPresence(sse), ['sally', 'walt']);
    assert.deepEqual(await shownPresence(ws), ['sally', 'walt']);

    await say(sse, 'posted over HTTP');
    await waitForMessage(ws, 'posted over HTTP');
    await waitForMessage(sse, 'posted over HTTP');
    await say(ws, 'sent over a socket');
    await waitForMessage(sse, 'sent over a socket');

    const seen = await shownMessages(sse);
    assert.deepEqual(
      seen.map((m) => [m.offset, m.username, m.own]),
      [[1, 'earlier', false], [2, 'sally', true], [3, 'walt', false]],
    );
    assert.deepEqual(sse.pageErrors, []);
    await ws.context().close();
    await sse.waitForSelector('#presence-list li[data-username="walt"]', { state: 'detached' });
    await sse.context().close();
  });
});

describe('EventSource across a server restart', () => {
  const env = serverAndBrowser();

  test('the page and a raw multi-channel EventSource resume with no loss and no duplicate', async () => {
    const channel = uniqueChannel('sse-restart');
    const [left, right] = [uniqueChannel('left'), uniqueChannel('right')];
    const page = await openChat(env.browser, env.server, 'erin', channel, { transport: 'sse' });

    // A bare EventSource on two channels in the same page, recording what it
    // gets: its Last-Event-ID must carry both channels' positions.
    await page.evaluate(([a, b]) => {
      window.multi = [];
      const source = new EventSource(`/sse?channel=${a}&channel=${b}`);
      source.addEventListener('message', (event) => {
        const message = JSON.parse(event.data);
        window.multi.push(`${message.channel}:${message.offset}:${message.msg}`);
      });
      window.multiSource = source;
    }, [left, right]);
    await page.waitForFunction(() => window.multiSource.readyState === EventSource.OPEN);

    for (const text of ['one', 'two']) {
      await say(page, text);
      await waitForMessage(page, text);
    }
    await publishOverHttp(env.server, left, 'api', 'L1');
    await publishOverHttp(env.server, right, 'api', 'R1');
    await page.waitForFunction(() => window.multi.length === 2);

    await env.server.kill();
    await waitForState(page, 'reconnecting');
    await env.server.restart();
    // Written while every stream is away (EventSource waits `retry:` 2 s).
    await publishOverHttp(env.server, channel, 'api', 'while away');
    await publishOverHttp(env.server, left, 'api', 'L2');
    await publishOverHttp(env.server, right, 'api', 'R2');
    await publishOverHttp(env.server, right, 'api', 'R3');

    await waitForState(page, 'online', 30000);
    await waitForMessage(page, 'while away');
    await say(page, 'three');
    await waitForMessage(page, 'three');
    const shown = await shownMessages(page);
    const stored = await historyOf(env.server, channel);
    assert.deepEqual(shown.map((m) => [m.offset, m.text]), stored.map((m) => [m.offset, m.msg]));
    assert.deepEqual(shown.map((m) => m.text), ['one', 'two', 'while away', 'three']);

    // A marker published last: a duplicate would arrive before it.
    await publishOverHttp(env.server, left, 'api', 'L3');
    await page.waitForFunction((marker) => window.multi.includes(marker), `${left}:3:L3`, { timeout: 15000 });
    const multi = await page.evaluate(() => window.multi);
    assert.deepEqual(multi, [
      `${left}:1:L1`, `${right}:1:R1`, `${left}:2:L2`, `${right}:2:R2`, `${right}:3:R3`, `${left}:3:L3`,
    ]);
    const log = await page.$$eval('#event-log li', (items) => items.map((li) => li.textContent));
    assert.ok(log.some((line) => line.includes('Last-Event-ID')), 'the log shows the interruption');
    await page.context().close();
  });
});
