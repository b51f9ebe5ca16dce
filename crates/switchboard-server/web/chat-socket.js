// One channel over the native WebSocket protocol (/ws, docs/protocol.md),
// reconnecting by itself and resuming from the last offset it delivered, so
// the page sees every message exactly once and in order.

import { ChannelTransport } from './channel-transport.js';

const HISTORY_ON_JOIN = 50;

export class ChatSocket extends ChannelTransport {
  /** Options and callbacks: see ChannelTransport. */
  constructor(options) {
    super(options, 'WebSocket');
    this.socket = null;
    // The epoch the resume offset belongs to.
    this.epoch = null;
    this.onBrowserOnline = () => this.reconnectNow();
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.onBrowserOnline);
    this.connect();
  }

  stop() {
    this.stopRetrying();
    window.removeEventListener('online', this.onBrowserOnline);
    if (this.socket) this.socket.close(1000, 'leaving');
    this.socket = null;
    this.on.state('offline');
  }

  connected() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  /** Publishes a pending message; its key is also the request id, so the
   *  ack or error names it. */
  transmit(entry) {
    if (!this.connected()) return;
    this.request({
      type: 'publish', channel: this.channel, msg: entry.text, idempotency_key: entry.key, id: entry.key,
    });
  }

  connect() {
    this.on.state(this.attempt === 0 && this.lastOffset === null ? 'connecting' : 'reconnecting');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const who = this.token ? `token=${encodeURIComponent(this.token)}` : `user=${encodeURIComponent(this.user)}`;
    const url = `${scheme}//${location.host}/ws?${who}`;
    this.on.log(`connecting to ${url.replace(/token=[^&]*/, 'token=…')}${this.attempt ? ` (attempt ${this.attempt + 1})` : ''}`);
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => this.on.log('open', 'good');
    socket.onerror = () => this.on.log('error (the close event has the details)', 'bad');
    socket.onclose = (event) => this.closed(socket, event);
    socket.onmessage = (event) => this.received(event.data);
  }

  closed(socket, event) {
    if (socket !== this.socket) return;
    this.socket = null;
    const reason = event.reason ? ` ${event.reason}` : '';
    this.on.log(`close ${event.code}${reason}`, event.code === 1000 ? 'info' : 'bad');
    this.retryUnlessRefused();
  }

  reconnectNow() {
    if (this.stopped || this.socket) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  request(object) {
    this.socket.send(JSON.stringify(object));
  }

  received(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.on.log(`unreadable frame from the server: ${String(data).slice(0, 80)}`, 'bad');
      return;
    }
    switch (frame.type) {
      case 'welcome':
        this.on.log(`welcome ${frame.username} (connection ${frame.connection_id}, server ${frame.server_version})`);
        this.username = frame.username;
        this.on.identity(frame.username);
        this.liveAfter = Infinity;
        this.joinChannel();
        break;
      case 'history':
        this.historyArrived(frame);
        break;
      case 'subscribed':
        this.subscribed(frame);
        break;
      case 'message':
        this.deliver(frame);
        break;
      case 'join':
        this.on.join(frame.username);
        break;
      case 'leave':
        this.on.leave(frame.username);
        break;
      case 'ack':
        this.acknowledged(frame.id, frame.offset, frame.time);
        break;
      case 'error':
        this.on.log(`error ${frame.code}: ${frame.reason}`, 'bad');
        if (frame.id !== undefined && !this.refusedUnconfirmed(frame.id, frame.reason)) {
          this.on.refused(frame.reason);
        }
        break;
      default:
        break;
    }
  }

  /** First time: the latest messages, then subscribe after them; after a
   *  drop: subscribe from the last offset seen. */
  joinChannel() {
    if (this.lastOffset === null) {
      this.request({ type: 'history', channel: this.channel, limit: HISTORY_ON_JOIN, id: 'join' });
    } else {
      this.subscribe();
    }
  }

  historyArrived(frame) {
    this.epoch = frame.epoch;
    this.lastOffset = 0;
    for (const message of frame.messages) this.deliver(message);
    this.subscribe();
  }

  subscribe() {
    const request = { type: 'subscribe', channel: this.channel, since: this.lastOffset };
    if (this.epoch !== null) request.epoch = this.epoch;
    this.on.log(`subscribe #${this.channel} since ${this.lastOffset}`);
    this.request(request);
  }

  subscribed(frame) {
    if (this.epoch !== null && frame.epoch !== this.epoch) {
      // The channel's history was reset: offsets start over and the server
      // replays what it has.
      this.on.log('channel history was reset; reloading', 'bad');
      this.on.reset();
      this.lastOffset = 0;
    }
    this.epoch = frame.epoch;
    this.liveAfter = frame.offset;
    this.attempt = 0;
    this.on.presence(frame.presence);
    this.on.state('online');
    this.on.log(`subscribed #${frame.channel} at offset ${frame.offset}`, 'good');
    this.resendUnconfirmed();
  }
}
