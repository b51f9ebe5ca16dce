// The channel list beside the people online: the server's channels and
// those opened by name, unread counts, the tab title, switching without a
// reload; and what screen readers are told.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  openChat,
  publishOverHttp,
  say,
  serverAndBrowser,
  shownMessages,
  uniqueChannel,
  waitForMessage,
  waitForState,
} from './support.mjs';

const channelButton = (channel) => `#channel-list button[data-channel="${channel}"]`;

function unreadOf(page, channel) {
  return page.$eval(channelButton(channel), (button) => button.querySelector('.unread')?.textContent ?? '0');
}

describe('channel list', () => {
  const env = serverAndBrowser();

  test('lists the server\'s channels and those opened by name, and switches without a reload', async () => {
    const home = uniqueChannel('home');
    const news = uniqueChannel('news');
    await publishOverHttp(env.server, news, 'bot', 'first news');
    const page = await openChat(env.browser, env.server, 'fran', home);
    await page.waitForSelector(`${channelButton(home)}[aria-current="true"]`);
    await page.waitForSelector(channelButton(news));
    await page.evaluate(() => { window.sameDocument = true; });

    await page.click(channelButton(news));
    await waitForMessage(page, 'first news');
    await waitForState(page, 'online');
    assert.equal(await page.textContent('#status-channel'), `#${news}`);
    await page.waitForSelector(`${channelButton(news)}[aria-current="true"]`);

    const opened = uniqueChannel('opened');
    await page.fill('#open-channel-name', `#${opened}`);
    await page.press('#open-channel-name', 'Enter');
    await page.waitForSelector(`${channelButton(opened)}[aria-current="true"]`);
    await waitForState(page, 'online');
    assert.equal(await page.textContent('#status-channel'), `#${opened}`);
    await say(page, 'hello in a new room');
    await waitForMessage(page, 'hello in a new room');

    assert.equal(await page.evaluate(() => window.sameDocument), true, 'no reload');
    // Every channel stays listed.
    for (const channel of [home, news, opened]) await page.waitForSelector(channelButton(channel));
    assert.deepEqual(page.pageErrors, []);
    await page.context().close();
  });

  test('counts unread messages per channel and in the tab title, and clears them when read', async () => {
    const here = uniqueChannel('here');
    const there = uniqueChannel('there');
    await publishOverHttp(env.server, there, 'bot', 'old news');
    const page = await openChat(env.browser, env.server, 'gina', here);
    await page.waitForSelector(channelButton(there));
    // Seen for the first time: what it already had does not count.
    assert.equal(await unreadOf(page, there), '0');

    await publishOverHttp(env.server, there, 'bot', 'news one');
    await publishOverHttp(env.server, there, 'bot', 'news two');
    await page.waitForFunction(
      (selector) => document.querySelector(selector)?.querySelector('.unread')?.textContent === '2',
      `${channelButton(there)}`,
    );
    await page.waitForFunction((name) => document.title === `(2) #${name} · switchboard`, here);
    // A message in the current channel is read as it arrives.
    await publishOverHttp(env.server, here, 'bot', 'right here');
    await waitForMessage(page, 'right here');
    assert.equal(await unreadOf(page, here), '0');

    await page.click(channelButton(there));
    await waitForMessage(page, 'news two');
    assert.deepEqual((await shownMessages(page)).map((m) => m.text), ['old news', 'news one', 'news two']);
    await page.waitForFunction((name) => document.title === `#${name} · switchboard`, there);
    assert.equal(await unreadOf(page, there), '0');
    // Back: nothing unread anywhere, and it stays read across a reload.
    await page.click(channelButton(here));
    await waitForMessage(page, 'right here');
    await page.reload();
    await waitForState(page, 'online');
    await page.waitForSelector(channelButton(there));
    assert.equal(await unreadOf(page, there), '0');
    assert.equal(await page.title(), `#${here} · switchboard`);
    await page.context().close();
  });

  test('screen readers hear live messages from others, not the history or their own', async () => {
    const channel = uniqueChannel('quiet');
    for (const text of ['before one', 'before two']) await publishOverHttp(env.server, channel, 'bot', text);
    const page = await openChat(env.browser, env.server, 'hana', channel);
    await waitForMessage(page, 'before two');
    assert.equal(await page.textContent('#announcer'), '');
    // The message list itself is not a live region.
    assert.equal(await page.getAttribute('#messages', 'aria-live'), null);
    assert.equal(await page.getAttribute('#messages', 'role'), null);

    await publishOverHttp(env.server, channel, 'ivan', 'live from ivan');
    await page.waitForFunction(() => document.getElementById('announcer').textContent.includes('ivan: live from ivan'));
    await say(page, 'my own words');
    await waitForMessage(page, 'my own words');
    assert.ok(!(await page.textContent('#announcer')).includes('my own words'));
    // The full date and time on hover of a message's time.
    const title = await page.getAttribute('#message-list .message time', 'title');
    assert.match(title, /\d{4}/, title);
    assert.match(title, /\d{1,2}:\d{2}:\d{2}/, title);
    await page.context().close();
  });
});
