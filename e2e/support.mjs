// Shared by the end-to-end tests: a real switchboard process and a real
// headless Chromium.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { chromium } from 'playwright-core';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The server binary: $SWITCHBOARD_BIN, or the debug build. */
export const serverBinary = process.env.SWITCHBOARD_BIN ?? path.join(repo, 'target', 'debug', 'switchboard');

/** Where tests leave artifacts (screenshots): target/e2e/. */
export const artifactDir = path.join(repo, 'target', 'e2e');
mkdirSync(artifactDir, { recursive: true });

const STARTUP_TIMEOUT_MS = 15000;

/** A switchboard process over its own data directory; restartable on the same port. */
export class Server {
  constructor(extraArgs = []) {
    this.dataDir = mkdtempSync(path.join(tmpdir(), 'switchboard-e2e-'));
    this.extraArgs = extraArgs;
    this.address = null;
    this.child = null;
    this.exited = null;
  }

  /** `env` adds environment variables, e.g. FAILPOINTS to arm a crash point
   *  (the test build has them compiled in: `--features failpoints`). */
  static async start(extraArgs = [], { env } = {}) {
    const server = new Server(extraArgs);
    await server.spawn('127.0.0.1:0', env);
    return server;
  }

  get url() {
    return `http://${this.address}`;
  }

  async spawn(listen, env = {}) {
    const args = ['--listen', listen, '--data-dir', this.dataDir, ...this.extraArgs];
    const child = spawn(serverBinary, args, {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn,switchboard_server::server=info', ...env },
    });
    this.child = child;
    // Resolves with the signal (or exit code) the process ended with.
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
    this.address = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('server did not report its address')), STARTUP_TIMEOUT_MS);
      let seen = '';
      child.stdout.on('data', (chunk) => {
        seen += chunk.toString();
        const found = /listening on http:\/\/(\S+)/.exec(seen);
        if (found) {
          clearTimeout(timer);
          resolve(found[1]);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`server exited with ${code} before listening`));
      });
    });
    // Keep draining its output so the pipe never fills.
    child.stdout.resume();
  }

  /** Kills the process outright (no graceful close), as a crash would. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  /** Starts again on the same address and data directory. */
  async restart(env) {
    await this.spawn(this.address, env);
  }

  async stop() {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Debian's Chromium, headless, kept off every network but loopback. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** A server and a browser for the tests of the enclosing `describe`:
 *  `env.server`, `env.browser`, started before them and stopped after. */
export function serverAndBrowser() {
  const env = { server: null, browser: null };
  before(async () => {
    env.server = await Server.start();
    env.browser = await launchBrowser();
  });
  after(async () => {
    await env.browser?.close();
    await env.server?.stop();
  });
  return env;
}

/** `promise`, or a rejection naming `what` after `ms`. */
export function within(promise, what, ms = 10000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A fresh channel name per test, so tests never see each other's messages. */
export function uniqueChannel(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
}

/** Opens the chat page in a new browser context and joins as `nickname`. */
export async function openChat(browser, server, nickname, channel, { viewport, transport } = {}) {
  const context = await browser.newContext({ viewport: viewport ?? { width: 1100, height: 720 } });
  const page = await context.newPage();
  page.dialogs = [];
  page.on('dialog', async (dialog) => {
    page.dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  page.pageErrors = [];
  page.on('pageerror', (error) => page.pageErrors.push(error.message));
  await page.goto(`${server.url}/#${channel}`);
  await page.fill('#join-nickname', nickname);
  if (transport) await page.selectOption('#join-transport', transport);
  await page.click('#join-form button[type=submit]');
  await waitForState(page, 'online');
  return page;
}

/** Waits for the status bar to show `state`; on timeout the error carries
 *  the page's event log, which says what the page tried and what it got. */
export async function waitForState(page, state, timeout = 15000) {
  try {
    return await page.waitForSelector(`#status-state[data-state="${state}"]`, { timeout });
  } catch (error) {
    const log = await page.$$eval('#event-log li', (items) => items.map((i) => i.textContent)).catch(() => []);
    error.message += `\npage event log:\n  ${log.join('\n  ')}`;
    throw error;
  }
}

/** Publishes over the HTTP API and returns the stored message's offset. */
export async function publishOverHttp(server, channel, username, msg) {
  const response = await fetch(`${server.url}/api/channels/${channel}/messages`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, msg }),
  });
  if (response.status !== 201) throw new Error(`publish answered ${response.status}: ${await response.text()}`);
  return (await response.json()).offset;
}

export async function historyOf(server, channel) {
  const response = await fetch(`${server.url}/api/channels/${channel}/messages?since=0&limit=1000`);
  if (!response.ok) throw new Error(`history answered ${response.status}`);
  return (await response.json()).messages;
}

/** Types `text` into the composer and presses Enter. */
export async function say(page, text) {
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
}

/** Messages sent from the page and not yet confirmed by the server. */
export function pendingMessages(page) {
  return page.$$eval('#message-list .pending', (items) => items.map((item) => item.querySelector('.text').textContent));
}

/** Waits until a message with exactly `text` is on screen. */
export async function waitForMessage(page, text, timeout = 10000) {
  await page.waitForFunction(
    (wanted) => [...document.querySelectorAll('#message-list .message .text')].some((el) => el.textContent === wanted),
    text,
    { timeout },
  );
}

/** The messages on screen, in order: {offset, username, text, own}. */
export function shownMessages(page) {
  return page.$$eval('#message-list .message', (items) =>
    items.map((item) => ({
      offset: Number(item.dataset.offset),
      username: item.querySelector('.user').textContent,
      text: item.querySelector('.text').textContent,
      own: item.classList.contains('own'),
    })),
  );
}

export function shownPresence(page) {
  return page.$$eval('#presence-list li', (items) => items.map((item) => item.dataset.username));
}
