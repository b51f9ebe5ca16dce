// The chat page in real headless Chromium against a real server.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import path from 'node:path';
import WebSocket from 'ws';
import {
  artifactDir,
  historyOf,
  openChat,
  say,
  serverAndBrowser,
  shownMessages,
  shownPresence,
  uniqueChannel,
  waitForMessage,
  waitForState,
} from './support.mjs';

const XSS = '<img src=x onerror=alert(1)>';

/** Publishes `texts` in order over the native protocol (the `ws` package, a
 *  client independent of the page) and resolves with their acked offsets. */
function publishOverWebSocket(server, user, channel, texts) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://${server.address}/ws?user=${user}`);
    const offsets = [];
    const timer = setTimeout(() => reject(new Error('no acks within 10 s')), 10000);
    socket.on('error', reject);
    socket.on('open', () => {
      texts.forEach((msg, id) => socket.send(JSON.stringify({ type: 'publish', channel, msg, id })));
    });
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === 'error') reject(new Error(frame.reason));
      if (frame.type !== 'ack') return;
      offsets[frame.id] = frame.offset;
      if (offsets.filter((o) => o !== undefined).length === texts.length) {
        clearTimeout(timer);
        socket.close(1000);
        resolve(offsets);
      }
    });
  });
}

describe('chat page', () => {
  const env = serverAndBrowser();

  test('two people in one channel see each other, their messages and presence', async () => {
    // A channel of its own: the test holds whatever ran before it.
    const channel = uniqueChannel('team');
    const alice = await openChat(env.browser, env.server, 'alice', channel);
    const bob = await openChat(env.browser, env.server, 'bob', channel);

    // Presence: each sees both, in the list and in the status bar count.
    await alice.waitForSelector('#presence-list li[data-username="bob"]');
    assert.deepEqual(await shownPresence(alice), ['alice', 'bob']);
    assert.deepEqual(await shownPresence(bob), ['alice', 'bob']);
    assert.equal(await alice.textContent('#status-online'), '2 online');
    assert.equal(await alice.textContent('#status-user'), 'alice');
    assert.equal(await alice.textContent('#status-channel'), `#${channel}`);
    assert.equal(await alice.textContent('#status-transport'), 'WebSocket');

    await say(alice, 'Hi Bob! Is the deploy done?');
    await waitForMessage(bob, 'Hi Bob! Is the deploy done?');
    await say(bob, 'Yes, all green. Release notes are in #releases.');
    await waitForMessage(alice, 'Yes, all green. Release notes are in #releases.');

    // Shift+Enter is a newline, Enter sends.
    await alice.fill('#composer-input', 'Great, thanks!');
    await alice.press('#composer-input', 'Shift+Enter');
    await alice.type('#composer-input', 'Lunch at noon?');
    await alice.press('#composer-input', 'Enter');
    await waitForMessage(bob, 'Great, thanks!\nLunch at noon?');
    await say(bob, 'Sounds good, see you there.');
    await waitForMessage(alice, 'Sounds good, see you there.');
    // Each page shows its own message when the server's copy comes back,
    // which may be after the other page has it.
    await waitForMessage(bob, 'Sounds good, see you there.');

    const seenByAlice = await shownMessages(alice);
    assert.deepEqual(
      seenByAlice.map((m) => [m.offset, m.username, m.own]),
      [[1, 'alice', true], [2, 'bob', false], [3, 'alice', true], [4, 'bob', false]],
    );
    assert.deepEqual(
      (await shownMessages(bob)).map((m) => [m.offset, m.username, m.own]),
      [[1, 'alice', false], [2, 'bob', true], [3, 'alice', false], [4, 'bob', true]],
    );
    assert.equal(await alice.inputValue('#composer-input'), '', 'the composer is cleared after sending');

    await alice.click('#event-log-pane summary');
    await alice.screenshot({ path: path.join(artifactDir, 'chat.png') });

    // Bob leaves: Alice's presence list updates.
    await bob.context().close();
    await alice.waitForSelector('#presence-list li[data-username="bob"]', { state: 'detached' });
    assert.equal(await alice.textContent('#status-online'), '1 online');
    assert.deepEqual(alice.pageErrors, []);
    await alice.context().close();
  });

  test('a reload shows the channel history', async () => {
    const channel = uniqueChannel('reload');
    const texts = Array.from({ length: 60 }, (_, i) => `history line ${i + 1}`);
    await publishOverWebSocket(env.server, 'writer', channel, texts);

    const page = await openChat(env.browser, env.server, 'reader', channel);
    await waitForMessage(page, 'history line 60');
    let shown = await shownMessages(page);
    // The last 50, ascending.
    assert.deepEqual(shown.map((m) => m.text), texts.slice(10));
    assert.deepEqual(shown.map((m) => m.offset), Array.from({ length: 50 }, (_, i) => i + 11));

    await say(page, 'after the history');
    await waitForMessage(page, 'after the history');
    await page.reload();
    // The nickname is remembered: the page joins again by itself.
    await waitForState(page, 'online');
    await waitForMessage(page, 'after the history');
    shown = await shownMessages(page);
    assert.deepEqual(shown.map((m) => m.text), [...texts.slice(11), 'after the history']);
    assert.equal(await page.textContent('#status-user'), 'reader');
    await page.context().close();
  });

  test('the join form waits for the server to say it takes the page', async () => {
    // The page first asks GET /ws whether the server refuses it (token
    // mode). Its answer resets the form, so the form stays hidden until
    // then: a nickname typed before would be wiped and the join lost.
    const channel = uniqueChannel('slow-probe');
    const context = await env.browser.newContext();
    const page = await context.newPage();
    let answer;
    const answered = new Promise((resolve) => (answer = resolve));
    await page.route('**/ws', async (route) => {
      await answered;
      await route.continue();
    });
    await page.goto(`${env.server.url}/#${channel}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(await page.isVisible('#join-nickname'), false, 'the form is shown before the answer');
    answer();
    await page.fill('#join-nickname', 'patience');
    await page.selectOption('#join-transport', 'sse');
    await page.click('#join-form button[type=submit]');
    await waitForState(page, 'online');
    assert.equal(await page.textContent('#status-transport'), 'SSE + POST');
    assert.equal(await page.textContent('#status-user'), 'patience');
    await context.close();
  });

  test('a message is rendered as text, never as HTML', async () => {
    const channel = uniqueChannel('xss');
    const page = await openChat(env.browser, env.server, 'mallory', channel);
    await say(page, XSS);
    await waitForMessage(page, XSS);
    assert.equal(await page.locator('#message-list img').count(), 0);
    assert.equal(await page.textContent('#message-list .message .text'), XSS);
    // And from someone else, arriving live.
    await publishOverWebSocket(env.server, 'eve', channel, ['<script>alert(2)</script><b>bold</b>']);
    await waitForMessage(page, '<script>alert(2)</script><b>bold</b>');
    assert.equal(await page.locator('#message-list script, #message-list b').count(), 0);
    assert.deepEqual(page.dialogs, [], 'no script ran');
    await page.context().close();
  });

  test('the page fits a phone-width screen', async () => {
    const channel = uniqueChannel('phone');
    const page = await openChat(env.browser, env.server, 'pat', channel, { viewport: { width: 375, height: 740 } });
    const long = `${'a-very-long-word-without-spaces-'.repeat(12)} and then ordinary words that wrap`;
    await say(page, long);
    await waitForMessage(page, long);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page scrolls sideways by ${overflow}px`);
    const box = await page.locator('#message-list .message').boundingBox();
    assert.ok(box.width <= 375, `message is ${box.width}px wide`);
    assert.ok(await page.isVisible('#composer-input'));
    await page.context().close();
  });
});

describe('chat page across a server restart', () => {
  const env = serverAndBrowser();

  test('reconnects, resumes from its last offset: no duplicate, no gap', async () => {
    const channel = uniqueChannel('restart');
    const page = await openChat(env.browser, env.server, 'carol', channel);
    for (const text of ['before 1', 'before 2', 'before 3']) {
      await say(page, text);
      await waitForMessage(page, text);
    }

    await env.server.kill();
    await waitForState(page, 'reconnecting');
    // Let at least one reconnect attempt fail against the dead port.
    await page.waitForFunction(() =>
      [...document.querySelectorAll('#event-log li')].some((li) => li.textContent.includes('reconnect attempt 2')),
    );
    assert.equal(await page.isDisabled('#composer-send'), true, 'sending is off while disconnected');

    await env.server.restart();
    // Messages the page has not seen yet, written while it is still away.
    await publishOverWebSocket(env.server, 'dave', channel, ['while away 1', 'while away 2', 'while away 3']);
    await waitForState(page, 'online', 30000);
    await waitForMessage(page, 'while away 3');
    await say(page, 'after');
    await waitForMessage(page, 'after');

    const shown = await shownMessages(page);
    const stored = await historyOf(env.server, channel);
    assert.deepEqual(
      shown.map((m) => [m.offset, m.text]),
      stored.map((m) => [m.offset, m.msg]),
    );
    assert.deepEqual(shown.map((m) => m.offset), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(shown.map((m) => m.text), [
      'before 1', 'before 2', 'before 3', 'while away 1', 'while away 2', 'while away 3', 'after',
    ]);

    const log = await page.$$eval('#event-log li', (items) => items.map((li) => li.textContent));
    assert.ok(log.some((line) => line.includes('close 1006')), 'the log shows the abnormal close');
    assert.ok(log.some((line) => line.includes('subscribe #') && line.includes('since 3')), 'resumed from offset 3');
    await page.context().close();
  });
});
