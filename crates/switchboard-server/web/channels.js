// The channel list: the channels the server knows (GET /api/channels) and
// those the user opened by name, each with its count of unread messages.
// The counts stay live through one event stream over every channel but the
// current one; what was read is remembered per channel in localStorage.

const OPENED_KEY = 'switchboard.channels';
const READ_KEY = 'switchboard.read';
// How often the server's list is fetched again, for channels others create.
const REFRESH_MS = 30000;
// An event stream follows at most this many channels.
const MAX_WATCHED = 64;

function loadJson(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

export class ChannelList {
  /**
   * @param {object} options
   * @param {(channel: string) => void} options.select  switch to a channel
   * @param {() => void} options.changed  unread counts changed
   * @param {(text: string, kind?: string) => void} options.log
   */
  constructor({ select, changed, log }) {
    this.select = select;
    this.changed = changed;
    this.log = log;
    this.current = null;
    this.opened = new Set(loadJson(OPENED_KEY, []));
    this.fromServer = new Set();
    // Latest offset seen per channel, and the last one read.
    this.latest = new Map();
    this.read = new Map(Object.entries(loadJson(READ_KEY, {})));
    this.source = null;
    this.watched = '';
    this.list = document.getElementById('channel-list');
  }

  /** With `tokenMode` the list holds the channels opened here only: the
   *  server's list needs the API key, and a stream over the others would
   *  show this user online in each of them. */
  start({ tokenMode = false } = {}) {
    this.tokenMode = tokenMode;
    this.render();
    if (tokenMode) return;
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  /** The channel now shown: opened, and counted as read as it is shown. */
  setCurrent(channel) {
    this.current = channel;
    this.remember(channel);
    this.render();
    this.watch();
  }

  /** A channel opened by name: listed from now on, and shown. */
  open(channel) {
    this.remember(channel);
    this.select(channel);
  }

  remember(channel) {
    if (this.opened.has(channel)) return;
    this.opened.add(channel);
    localStorage.setItem(OPENED_KEY, JSON.stringify([...this.opened]));
  }

  /** A message of the current channel was shown. */
  markRead(channel, offset) {
    this.saw(channel, offset);
    if ((this.read.get(channel) ?? 0) >= offset) return;
    this.read.set(channel, offset);
    localStorage.setItem(READ_KEY, JSON.stringify(Object.fromEntries(this.read)));
  }

  /** Notes `channel`'s latest offset; a channel seen for the first time
   *  starts with nothing unread. */
  saw(channel, offset) {
    if (!this.read.has(channel)) this.read.set(channel, offset);
    if ((this.latest.get(channel) ?? 0) >= offset) return;
    this.latest.set(channel, offset);
    this.render();
    this.changed();
  }

  unread(channel) {
    if (channel === this.current) return 0;
    return Math.max(0, (this.latest.get(channel) ?? 0) - (this.read.get(channel) ?? 0));
  }

  totalUnread() {
    let total = 0;
    for (const channel of this.channels()) total += this.unread(channel);
    return total;
  }

  channels() {
    return [...new Set([...this.opened, ...this.fromServer])].sort((a, b) => a.localeCompare(b));
  }

  async refresh() {
    try {
      const response = await fetch('/api/channels');
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const { channels } = await response.json();
      for (const { channel, last_offset: offset } of channels) {
        this.fromServer.add(channel);
        this.saw(channel, offset);
      }
      this.render();
      this.watch();
    } catch (error) {
      this.log(`channel list unavailable: ${error.message}`, 'bad');
    }
  }

  /** One event stream over the other channels (not counted in presence:
   *  no user), moved when the set changes; EventSource resumes it itself. */
  watch() {
    if (this.tokenMode) return;
    const others = this.channels().filter((c) => c !== this.current).slice(0, MAX_WATCHED);
    const key = others.join(',');
    if (key === this.watched) return;
    this.watched = key;
    this.source?.close();
    this.source = null;
    if (others.length === 0) return;
    const query = new URLSearchParams(others.map((channel) => ['channel', channel]));
    const source = new EventSource(`/sse?${query}`);
    source.addEventListener('message', (event) => {
      const message = JSON.parse(event.data);
      this.saw(message.channel, message.offset);
    });
    source.addEventListener('presence', (event) => {
      const presence = JSON.parse(event.data);
      this.saw(presence.channel, presence.offset);
    });
    this.source = source;
  }

  render() {
    const items = this.channels().map((channel) => {
      const item = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.channel = channel;
      if (channel === this.current) button.setAttribute('aria-current', 'true');
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = `#${channel}`;
      button.append(name);
      const unread = this.unread(channel);
      if (unread > 0) {
        const badge = document.createElement('span');
        badge.className = 'unread';
        badge.textContent = String(unread);
        badge.setAttribute('aria-label', `${unread} unread`);
        button.append(badge);
      }
      button.addEventListener('click', () => this.select(channel));
      item.append(button);
      return item;
    });
    this.list.replaceChildren(...items);
  }
}
