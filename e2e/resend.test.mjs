// A message typed just before the server dies is neither lost nor doubled:
// the page keeps it pending until the server's copy arrives, and after the
// reconnect resends it with the same idempotency key.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  historyOf,
  launchBrowser,
  openChat,
  pendingMessages,
  say,
  Server,
  shownMessages,
  uniqueChannel,
  waitForMessage,
  waitForState,
} from './support.mjs';

const CASES = [
  // Stored, then killed before the ack leaves: the resend must not store it again.
  { failpoint: 'history-after-commit', transport: 'websocket' },
  // Killed before it is stored: the resend is what stores it.
  { failpoint: 'history-before-commit', transport: 'websocket' },
  { failpoint: 'history-after-commit', transport: 'sse' },
  { failpoint: 'history-before-commit', transport: 'sse' },
];

describe('a dropped connection between send and ack', () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  for (const { failpoint, transport } of CASES) {
    test(`${transport}: the server SIGKILLed at ${failpoint}; the message appears exactly once`, async () => {
      const server = await Server.start([], { env: { FAILPOINTS: `${failpoint}=return` } });
      try {
        const channel = uniqueChannel('crash');
        const page = await openChat(browser, server, 'carol', channel, { transport });
        const text = `typed just before the crash (${failpoint})`;
        await say(page, text);
        // The store's fail point kills the process (SIGKILL) on this publish.
        assert.equal(await server.exited, 'SIGKILL');
        assert.deepEqual(await pendingMessages(page), [text], 'shown as pending, not lost');
        assert.deepEqual(await shownMessages(page), []);

        await server.restart();
        await waitForState(page, 'online', 30000);
        await waitForMessage(page, text, 15000);
        await page.waitForFunction(() => document.querySelectorAll('#message-list .pending').length === 0);

        // One more after the reconnect, then count every copy everywhere.
        await say(page, 'and one after');
        await waitForMessage(page, 'and one after');
        const stored = await historyOf(server, channel);
        assert.deepEqual(stored.map((m) => m.msg), [text, 'and one after']);
        const shown = await shownMessages(page);
        assert.deepEqual(shown.map((m) => [m.offset, m.text]), stored.map((m) => [m.offset, m.msg]));
        const fresh = await openChat(browser, server, 'dave', channel);
        assert.deepEqual((await shownMessages(fresh)).map((m) => m.text), [text, 'and one after']);
        assert.deepEqual(page.pageErrors, []);
        await page.context().close();
        await fresh.context().close();
      } finally {
        await server.stop();
      }
    });
  }
});

describe('a refused message', () => {
  let browser;
  let server;
  before(async () => {
    browser = await launchBrowser();
    server = await Server.start(['--max-msg-bytes', '16']);
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  for (const transport of ['websocket', 'sse']) {
    test(`${transport}: says why and gives the text back for editing`, async () => {
      const channel = uniqueChannel('refused');
      const page = await openChat(browser, server, 'erin', channel, { transport });
      const text = 'far longer than sixteen bytes';
      await say(page, text);
      await page.waitForSelector('#message-list .failed');
      const state = await page.textContent('#message-list .failed .state');
      assert.match(state, /^Not sent: .*16/);
      assert.equal(await page.inputValue('#composer-input'), text, 'the text is back in the composer');
      await page.fill('#composer-input', 'short');
      await page.press('#composer-input', 'Enter');
      await waitForMessage(page, 'short');
      assert.deepEqual((await historyOf(server, channel)).map((m) => m.msg), ['short']);
      await page.context().close();
    });
  }
});
