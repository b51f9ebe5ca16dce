// What the page shows: status bar, messages, presence and the event log.
// Everything a peer sent is written with textContent, never as HTML.

const $ = (id) => document.getElementById(id);

const STATE_LABELS = {
  connecting: 'connecting',
  online: 'online',
  reconnecting: 'reconnecting',
  offline: 'offline',
};

const MAX_LOG_ENTRIES = 300;
// Within this many pixels of the bottom counts as "at the bottom".
const STICKY_SLACK_PX = 48;

export class ChatView {
  constructor() {
    this.messages = $('messages');
    this.list = $('message-list');
    this.jump = $('jump');
    this.presence = new Set();
    this.me = '';
    this.jump.addEventListener('click', () => this.scrollToBottom());
    this.messages.addEventListener('scroll', () => {
      if (this.atBottom()) this.jump.hidden = true;
    });
  }

  start(user, channel, transport) {
    this.me = user;
    this.unseen = 0;
    this.list.replaceChildren();
    $('announcer').replaceChildren();
    this.setPresence([]);
    $('status-user').textContent = user;
    $('status-channel').textContent = `#${channel}`;
    $('status-transport').textContent = transport;
    $('composer-input').placeholder = `Message #${channel} — Enter to send, Shift+Enter for a new line`;
    this.channel = channel;
  }

  /** The name the server knows this connection by: own messages are its. */
  setIdentity(username) {
    if (username === this.me) return;
    this.me = username;
    $('status-user').textContent = username;
    for (const item of this.list.querySelectorAll('.message')) {
      item.classList.toggle('own', item.dataset.username === username);
    }
    this.renderPresence();
  }

  /** The tab title: the channel, after the count of unread messages. */
  setTitle(unread) {
    const count = unread > 0 ? `(${unread}) ` : '';
    document.title = `${count}#${this.channel} · switchboard`;
  }

  setState(state) {
    const el = $('status-state');
    el.dataset.state = state;
    el.textContent = STATE_LABELS[state] ?? state;
    $('composer-send').disabled = state !== 'online';
  }

  /** Drops every shown message (the channel's history was reset); what is
   *  still being sent stays. */
  clearMessages() {
    for (const item of this.list.querySelectorAll('.message, .notice')) item.remove();
  }

  /** A message being sent: shown below the conversation until the
   *  server's copy takes its place. */
  addPending(entry) {
    const item = document.createElement('li');
    item.className = 'pending own';
    item.dataset.key = entry.key;
    const meta = document.createElement('div');
    meta.className = 'meta';
    const state = document.createElement('span');
    state.className = 'state';
    state.textContent = 'sending…';
    meta.append(state);
    const text = document.createElement('div');
    text.className = 'text';
    text.textContent = entry.text;
    item.append(meta, text);
    this.list.append(item);
    this.scrollToBottom();
  }

  pendingItem(entry) {
    return this.list.querySelector(`li[data-key="${CSS.escape(entry.key)}"]`);
  }

  /** Stored (acked); shown in order once its copy arrives. */
  markStored(entry) {
    const item = this.pendingItem(entry);
    if (!item) return;
    item.classList.add('stored');
    item.querySelector('.state').textContent = 'sent';
  }

  removePending(entry) {
    this.pendingItem(entry)?.remove();
  }

  /** Refused: says why, and offers the text back for editing. */
  failPending(entry, reason, onEdit) {
    const item = this.pendingItem(entry);
    if (!item) return;
    item.classList.replace('pending', 'failed');
    item.removeAttribute('data-key');
    item.querySelector('.state').textContent = `Not sent: ${reason}`;
    const edit = document.createElement('button');
    edit.type = 'button';
    edit.className = 'link-button';
    edit.textContent = 'Edit';
    edit.addEventListener('click', () => {
      item.remove();
      onEdit(entry.text);
    });
    item.querySelector('.meta').append(edit);
  }

  /** Shows `message`; a live one (not history, not a replay) from someone
   *  else is also read out by screen readers. */
  addMessage(message, { live = false } = {}) {
    const stick = this.atBottom();
    const item = document.createElement('li');
    item.className = 'message';
    if (message.username === this.me) item.classList.add('own');
    item.dataset.offset = String(message.offset);
    item.dataset.username = message.username;

    const meta = document.createElement('div');
    meta.className = 'meta';
    const user = document.createElement('span');
    user.className = 'user';
    user.textContent = message.username;
    const time = document.createElement('time');
    const when = new Date(message.time);
    time.dateTime = message.time;
    time.title = when.toLocaleString([], { dateStyle: 'full', timeStyle: 'long' });
    time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    meta.append(user, time);

    const text = document.createElement('div');
    text.className = 'text';
    text.textContent = message.msg;

    item.append(meta, text);
    // Confirmed messages go above those still being sent.
    this.list.insertBefore(item, this.list.querySelector(':scope > .pending'));
    if (stick || message.username === this.me) {
      this.scrollToBottom();
    } else {
      this.jump.hidden = false;
    }
    if (live && message.username !== this.me) this.announce(`${message.username}: ${message.msg}`);
  }

  /** Hands `text` to screen readers (a polite live region), keeping only
   *  the last few lines there. */
  announce(text) {
    const region = $('announcer');
    const line = document.createElement('p');
    line.textContent = text;
    region.append(line);
    while (region.childElementCount > 5) region.firstElementChild.remove();
  }

  /** A line from the page itself (not a chat message), e.g. a refused send. */
  addNotice(text) {
    const stick = this.atBottom();
    const item = document.createElement('li');
    item.className = 'notice';
    item.textContent = text;
    this.list.append(item);
    if (stick) this.scrollToBottom();
  }

  setPresence(users) {
    this.presence = new Set(users);
    this.renderPresence();
  }

  join(user) {
    this.presence.add(user);
    this.renderPresence();
  }

  leave(user) {
    this.presence.delete(user);
    this.renderPresence();
  }

  renderPresence() {
    const users = [...this.presence].sort((a, b) => a.localeCompare(b));
    const items = users.map((name) => {
      const item = document.createElement('li');
      item.textContent = name;
      item.dataset.username = name;
      if (name === this.me) item.classList.add('me');
      return item;
    });
    $('presence-list').replaceChildren(...items);
    $('people-count').textContent = String(users.length);
    $('status-online').textContent = `${users.length} online`;
  }

  log(text, kind = 'info') {
    const list = $('event-log');
    const item = document.createElement('li');
    item.className = `log-${kind}`;
    const time = document.createElement('time');
    time.textContent = new Date().toLocaleTimeString([], { hour12: false });
    const body = document.createElement('span');
    body.textContent = text;
    item.append(time, body);
    list.append(item);
    while (list.childElementCount > MAX_LOG_ENTRIES) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  atBottom() {
    const el = this.messages;
    return el.scrollHeight - el.scrollTop - el.clientHeight <= STICKY_SLACK_PX;
  }

  scrollToBottom() {
    this.messages.scrollTop = this.messages.scrollHeight;
    this.jump.hidden = true;
  }
}
