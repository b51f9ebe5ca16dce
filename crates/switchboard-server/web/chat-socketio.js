// One channel over Socket.IO (/socket.io/, the event contract of
// docs/protocol.md), with the official browser client the server serves at
// /socket.io/socket.io.js when started with --socketio-client. The client
// reconnects by itself; a reconnect within the recovery window is
// recovered by the server (every missed message, nothing twice), and any
// other rejoins from the last offset shown.

import { tokenRefusal } from './access.js';
import { ChannelTransport } from './channel-transport.js';

const HISTORY_ON_JOIN = 50;
export const CLIENT_URL = '/socket.io/socket.io.js';

let clientLoaded = null;

/** Loads the official client once; resolves with its `io`. */
function loadClient() {
  clientLoaded ??= new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = CLIENT_URL;
    script.onload = () => resolve(window.io);
    script.onerror = () => reject(new Error(`${CLIENT_URL} did not load`));
    document.head.append(script);
  });
  return clientLoaded;
}

/** Whether the server serves the client (and so this transport). */
export async function socketIoAvailable() {
  try {
    const response = await fetch(CLIENT_URL, { method: 'HEAD' });
    return response.ok;
  } catch {
    return false;
  }
}

export class ChatSocketIo extends ChannelTransport {
  /** Options and callbacks: see ChannelTransport. */
  constructor(options) {
    super(options, 'Socket.IO');
    this.socket = null;
    this.epoch = null;
  }

  async start() {
    this.stopped = false;
    this.on.state('connecting');
    let io;
    try {
      io = await loadClient();
    } catch (error) {
      this.on.log(error.message, 'bad');
      this.on.refused('the Socket.IO client is not available');
      return;
    }
    if (this.stopped) return;
    this.on.log('connecting over Socket.IO (long-polling, then WebSocket)');
    const auth = this.token ? { token: this.token } : { user: this.user };
    const socket = io({ auth, reconnectionDelayMax: 15000 });
    this.socket = socket;
    socket.on('connect', () => this.connectedNow());
    socket.on('disconnect', (reason) => {
      this.on.log(`disconnected: ${reason}`, 'bad');
      if (this.stopped) return;
      this.on.state('reconnecting');
      // The server ended the session (an expired token): the client does
      // not come back by itself.
      if (reason === 'io server disconnect') this.deniedOrReconnect();
    });
    socket.on('connect_error', (error) => {
      this.on.log(`connect error: ${error.message}`, 'bad');
      if (error.data?.code) this.deny({ code: error.data.code, message: error.message });
      else if (this.token) this.deniedOrReconnect();
    });
    socket.io.on('reconnect_attempt', (attempt) => this.on.log(`reconnect attempt ${attempt}`));
    socket.io.engine?.on('upgrade', (transport) => this.on.log(`upgraded to ${transport.name}`));
    socket.on('message', (message) => this.deliver(message));
    socket.on('join', (event) => event.channel === this.channel && this.on.join(event.username));
    socket.on('leave', (event) => event.channel === this.channel && this.on.leave(event.username));
    socket.on('error', (error) => this.on.log(`error ${error.code}: ${error.reason}`, 'bad'));
  }

  /** The server refuses the token: stop, and say why. */
  deny(refusal) {
    this.stop();
    this.on.denied(refusal);
  }

  async deniedOrReconnect() {
    const refusal = await tokenRefusal(this.token);
    if (refusal) this.deny(refusal);
    else if (!this.stopped && !this.socket?.active) this.socket?.connect();
  }

  stop() {
    this.stopRetrying();
    this.socket?.disconnect();
    this.socket = null;
    this.on.state('offline');
  }

  connected() {
    return this.socket?.connected === true;
  }

  /** Publishes a pending message; its ack names the stored offset. */
  transmit(entry) {
    if (!this.connected()) return;
    const request = { channel: this.channel, msg: entry.text, idempotency_key: entry.key };
    this.socket.emit('publish', request, (ack) => {
      if (ack?.error) {
        this.on.log(`publish refused: ${ack.error.code}`, 'bad');
        if (!this.refusedUnconfirmed(entry.key, ack.error.reason)) this.on.refused(ack.error.reason);
      } else {
        this.acknowledged(entry.key, ack.offset, ack.time);
      }
    });
  }

  /** Emits `event` and resolves with its acknowledgement. */
  ask(event, payload) {
    return new Promise((resolve) => this.socket.emit(event, payload, resolve));
  }

  async connectedNow() {
    this.username = this.user;
    this.on.identity(this.user);
    this.on.log(`connected (${this.socket.io.engine.transport.name})`, 'good');
    if (this.socket.recovered) {
      // The server gave the channel back with every missed message.
      this.on.log('session recovered: missed messages follow', 'good');
      const presence = await this.ask('presence', { channel: this.channel });
      this.online(presence.users);
      return;
    }
    this.liveAfter = Infinity;
    if (this.lastOffset === null) {
      const history = await this.ask('history', { channel: this.channel, limit: HISTORY_ON_JOIN });
      this.epoch = history.epoch;
      this.lastOffset = 0;
      for (const message of history.messages) this.deliver(message);
    }
    this.on.log(`join #${this.channel} since ${this.lastOffset}`);
    const joined = await this.ask('join', { channel: this.channel, since: this.lastOffset });
    if (joined.error) {
      this.on.log(`join refused: ${joined.error.reason}`, 'bad');
      return;
    }
    if (this.epoch !== null && joined.epoch !== this.epoch) {
      this.on.log('channel history was reset; reloading', 'bad');
      this.on.reset();
      this.lastOffset = 0;
    }
    this.epoch = joined.epoch;
    this.liveAfter = joined.offset;
    this.online(joined.presence);
  }

  online(presence) {
    this.on.presence(presence);
    this.on.state('online');
    this.resendUnconfirmed();
  }
}
