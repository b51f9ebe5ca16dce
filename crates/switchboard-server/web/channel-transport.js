// What every transport of the page shares: the resume point (the last
// offset shown), reconnecting with backoff, and the messages sent but not
// yet confirmed, which are resent with the same idempotency key after a
// reconnect so that each appears exactly once.

import { tokenRefusal } from './access.js';

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 15000;

/** A fresh idempotency key: 32 hex digits (crypto.getRandomValues works
 *  on plain http too, unlike crypto.randomUUID). */
export function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential, capped,
 * with "equal jitter" (half fixed, half random) so that clients dropped
 * together do not all come back in the same instant.
 */
export function retryDelay(attempt) {
  const ceiling = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export class ChannelTransport {
  /**
   * @param {object} options
   * @param {string} options.user
   * @param {string} options.channel
   * @param {string|null} options.token  the connection token (`--auth token`)
   * @param {object} options.on  callbacks: state(s), message(m, {live}),
   *   identity(username) (the name the server knows the connection by), presence(users),
   *   join(user), leave(user), reset(), log(text, kind), refused(reason),
   *   and for sent messages: pending(entry), stored(entry), settled(entry),
   *   failed(entry, reason); an entry is {key, text, offset, time};
   *   denied({code, message}): the server refuses this page's token
   * @param {string} name  shown in the status bar
   */
  constructor({ user, channel, token, on }, name) {
    this.user = user;
    this.channel = channel;
    this.token = token ?? null;
    this.on = on;
    this.name = name;
    this.retryTimer = null;
    this.attempt = 0;
    this.stopped = true;
    // Resume point: the last offset handed to on.message.
    this.lastOffset = null;
    // Messages past this offset are live; up to it, history or a replay.
    this.liveAfter = Infinity;
    // The username the server gave this connection (welcome, or the
    // accepted ?user=): what decides which messages are our own.
    this.username = null;
    // Sent, not yet shown as a message: idempotency key → entry, in the
    // order they were sent.
    this.unconfirmed = new Map();
  }

  /** Sends `text` as a new message; false if not connected (nothing was
   *  sent). Once sent it stays pending until the server's copy is shown. */
  send(text) {
    if (!this.connected()) return false;
    const entry = { key: newIdempotencyKey(), text, offset: null, time: null };
    this.unconfirmed.set(entry.key, entry);
    this.on.pending(entry);
    this.transmit(entry);
    return true;
  }

  /** Sends every message still waiting for its ack again, with the same
   *  keys: the server stores each at most once. */
  resendUnconfirmed() {
    for (const entry of this.unconfirmed.values()) {
      if (entry.offset === null) this.transmit(entry);
    }
  }

  /** The server stored the message under `offset` (a repeat of its key
   *  gets the first offset). It is shown when its copy arrives in order. */
  acknowledged(key, offset, time) {
    const entry = this.unconfirmed.get(key);
    if (!entry) return;
    if (this.lastOffset !== null && offset <= this.lastOffset) {
      // Its copy was shown already.
      this.unconfirmed.delete(key);
      this.on.settled(entry);
      return;
    }
    entry.offset = offset;
    entry.time = time;
    this.on.stored(entry);
  }

  /** The server refused the message: it is not stored, and not resent. */
  refusedUnconfirmed(key, reason) {
    const entry = this.unconfirmed.get(key);
    if (!entry) return false;
    this.unconfirmed.delete(key);
    this.on.failed(entry, reason);
    return true;
  }

  /** The pending entry that `message` (a copy from the server) confirms:
   *  by offset once acked, else the oldest unacked one with its text. */
  confirm(message) {
    if (message.username !== (this.username ?? this.user) || this.unconfirmed.size === 0) return;
    const entries = [...this.unconfirmed.values()];
    const entry = entries.find((e) => e.offset === message.offset)
      ?? entries.find((e) => e.offset === null && e.text === message.msg);
    if (!entry) return;
    this.unconfirmed.delete(entry.key);
    this.on.settled(entry);
  }

  /** Calls `this.connect()` again after the next backoff delay. */
  scheduleRetry() {
    if (this.stopped) return;
    const delay = retryDelay(this.attempt);
    this.attempt += 1;
    this.on.state('reconnecting');
    this.on.log(`reconnect attempt ${this.attempt} in ${(delay / 1000).toFixed(1)} s`);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** After a connection failed: gives up if the server refuses the
   *  token (expired, say), tries again later otherwise. */
  async retryUnlessRefused() {
    const refusal = this.token ? await tokenRefusal(this.token) : null;
    if (this.stopped) return;
    if (refusal) {
      this.stopRetrying();
      this.on.state('offline');
      this.on.denied(refusal);
      return;
    }
    this.scheduleRetry();
  }

  stopRetrying() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
  }

  /** Shows `message` unless it is already shown: replay and live may
   *  overlap by design, and the offset makes it exact. */
  deliver(message) {
    if (message.channel !== this.channel) return;
    if (this.lastOffset !== null && message.offset <= this.lastOffset) return;
    this.lastOffset = message.offset;
    this.confirm(message);
    this.on.message(message, { live: message.offset > this.liveAfter });
  }
}
