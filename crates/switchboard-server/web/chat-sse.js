// One channel over Server-Sent Events (GET /sse) for what arrives and
// POST /api/channels/{channel}/messages for what is sent. The browser's
// EventSource reconnects by itself and sends the last event id (the
// offset), so the server resumes the stream where it broke.

import { authorization } from './access.js';
import { ChannelTransport, retryDelay } from './channel-transport.js';

const HISTORY_ON_JOIN = 50;

export class ChatEventSource extends ChannelTransport {
  /** Options and callbacks: see ChannelTransport. */
  constructor(options) {
    super(options, 'SSE + POST');
    this.source = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopRetrying();
    this.source?.close();
    this.source = null;
    this.on.state('offline');
  }

  connected() {
    return this.source?.readyState === EventSource.OPEN;
  }

  /** Publishes a pending message over HTTP. A request that never got an
   *  answer (the connection dropped) is sent again, with the same key,
   *  once the stream is back. */
  async transmit(entry) {
    if (!this.connected() || entry.inFlight) return;
    entry.inFlight = true;
    const url = `/api/channels/${encodeURIComponent(this.channel)}/messages`;
    let response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...authorization(this.token) },
        body: JSON.stringify({ username: this.user, msg: entry.text, idempotency_key: entry.key }),
      });
    } catch (error) {
      entry.inFlight = false;
      this.on.log(`publish not answered (${error.message}); it is sent again once reconnected`, 'bad');
      if (this.connected()) setTimeout(() => this.transmit(entry), retryDelay(0));
      return;
    }
    entry.inFlight = false;
    const body = await response.json().catch(() => ({}));
    if (response.status === 201) {
      this.acknowledged(entry.key, body.offset, body.time);
      return;
    }
    const reason = body.error?.message ?? `HTTP ${response.status}`;
    this.on.log(`publish refused: ${response.status} ${body.error?.code ?? ''}`, 'bad');
    this.refusedUnconfirmed(entry.key, reason);
  }

  /** First time: the latest messages over HTTP, then a stream from after
   *  them; after a failed stream: a new stream from the last offset seen. */
  async connect() {
    this.on.state(this.lastOffset === null ? 'connecting' : 'reconnecting');
    try {
      if (this.lastOffset === null) await this.loadHistory();
    } catch (error) {
      this.on.log(`history unavailable: ${error.message}`, 'bad');
      this.retryUnlessRefused();
      return;
    }
    if (this.stopped) return;
    const query = new URLSearchParams({ channel: this.channel, user: this.user, since: String(this.lastOffset) });
    if (this.token) query.set('token', this.token);
    const url = `/sse?${query}`;
    this.on.log(`connecting to ${url.replace(/token=[^&]*/, 'token=…')}${this.attempt ? ` (attempt ${this.attempt + 1})` : ''}`);
    const source = new EventSource(url);
    this.source = source;
    source.onopen = () => {
      this.attempt = 0;
      // Until this stream's presence event says where live begins, what
      // arrives is a replay.
      this.liveAfter = Infinity;
      this.username = this.user;
      this.on.identity(this.user);
      this.on.log('open', 'good');
      this.on.state('online');
      this.resendUnconfirmed();
    };
    source.onerror = () => this.failed(source);
    source.addEventListener('message', (event) => this.deliver(JSON.parse(event.data)));
    source.addEventListener('presence', (event) => {
      const presence = JSON.parse(event.data);
      this.liveAfter = presence.offset;
      this.on.presence(presence.users);
    });
    source.addEventListener('join', (event) => this.on.join(JSON.parse(event.data).username));
    source.addEventListener('leave', (event) => this.on.leave(JSON.parse(event.data).username));
    source.addEventListener('reset', (event) => {
      const reset = JSON.parse(event.data);
      this.on.log(`reset: history now starts at offset ${reset.first_offset}; reloading`, 'bad');
      this.on.reset();
      this.lastOffset = 0;
    });
  }

  async loadHistory() {
    const url = `/api/channels/${encodeURIComponent(this.channel)}/messages?limit=${HISTORY_ON_JOIN}`;
    const response = await fetch(url, { headers: authorization(this.token) });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const page = await response.json();
    this.lastOffset = 0;
    for (const message of page.messages) this.deliver(message);
  }

  failed(source) {
    if (source !== this.source || this.stopped) return;
    if (source.readyState === EventSource.CONNECTING) {
      // The browser retries by itself, sending Last-Event-ID.
      this.on.log('error: stream interrupted; the browser reconnects with Last-Event-ID', 'bad');
      this.on.state('reconnecting');
      return;
    }
    // Closed for good (an HTTP error): start a new stream ourselves.
    this.on.log('error: stream closed', 'bad');
    this.source = null;
    this.retryUnlessRefused();
  }
}
