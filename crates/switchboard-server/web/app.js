// The chat page: asks for a nickname and channel, then runs one transport
// for that channel and shows what it reports.

import { refusalText, takeToken, tokenRefusal, tokenSubject } from './access.js';
import { ChannelList } from './channels.js';
import { ChatEventSource } from './chat-sse.js';
import { ChatSocket } from './chat-socket.js';
import { ChatSocketIo, socketIoAvailable } from './chat-socketio.js';
import { ChatView } from './view.js';

const NICKNAME_KEY = 'switchboard.nickname';
const TRANSPORT_KEY = 'switchboard.transport';
const TRANSPORTS = { websocket: ChatSocket, sse: ChatEventSource, socketio: ChatSocketIo };
const DEFAULT_CHANNEL = 'lobby';
const CHANNEL_PATTERN = /^[A-Za-z0-9_.:@-]{1,128}$/;

const $ = (id) => document.getElementById(id);
// Taken before the fragment is read as a channel name.
const token = takeToken();
const view = new ChatView();
let transport = null;
// Live messages of the current channel that arrived while the tab was hidden.
let unseen = 0;
const channels = new ChannelList({
  select: (channel) => {
    if (transport?.channel === channel) return;
    location.hash = `#${encodeURIComponent(channel)}`;
  },
  changed: () => updateTitle(),
  log: (text, kind) => view.log(text, kind),
});

function updateTitle() {
  view.setTitle(channels.totalUnread() + unseen);
}

function channelFromHash() {
  const name = decodeURIComponent(location.hash.slice(1));
  return CHANNEL_PATTERN.test(name) ? name : DEFAULT_CHANNEL;
}

/** The nickname's problem, or '' if the server will accept it. */
function nicknameProblem(name) {
  if (name.length === 0) return 'Choose a nickname.';
  if ([...name].length > 64) return 'A nickname has at most 64 characters.';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'A nickname cannot contain control characters.';
  return '';
}

function showJoinForm(problem = '') {
  transport?.stop();
  transport = null;
  $('join-nickname').value = localStorage.getItem(NICKNAME_KEY) ?? '';
  $('join-channel').value = channelFromHash();
  $('join-transport').value = chosenTransport();
  $('join-error').textContent = problem;
  $('chat-view').hidden = true;
  $('join-view').hidden = false;
  $('change').hidden = true;
  $('join-nickname').focus();
}

function chosenTransport() {
  const stored = localStorage.getItem(TRANSPORT_KEY);
  return stored in TRANSPORTS ? stored : 'websocket';
}

function join(nickname, channel) {
  transport?.stop();
  if (!token) localStorage.setItem(NICKNAME_KEY, nickname);
  const Transport = TRANSPORTS[chosenTransport()];
  if (channelFromHash() !== channel || location.hash.slice(1) !== channel) {
    history.replaceState(null, '', `#${encodeURIComponent(channel)}`);
  }
  $('join-view').hidden = true;
  $('chat-view').hidden = false;
  $('change').hidden = false;

  unseen = 0;
  channels.setCurrent(channel);
  transport = new Transport({
    user: nickname,
    channel,
    token,
    on: {
      denied: (refusal) => showRefused(refusal),
      state: (state) => view.setState(state),
      identity: (username) => view.setIdentity(username),
      message: (message, { live }) => {
        view.addMessage(message, { live });
        channels.markRead(channel, message.offset);
        if (live && document.hidden && message.username !== view.me) {
          unseen += 1;
          updateTitle();
        }
      },
      presence: (users) => view.setPresence(users),
      join: (user) => view.join(user),
      leave: (user) => view.leave(user),
      reset: () => view.clearMessages(),
      log: (text, kind) => view.log(text, kind),
      refused: (reason) => view.addNotice(`Not sent: ${reason}`),
      pending: (entry) => view.addPending(entry),
      stored: (entry) => view.markStored(entry),
      settled: (entry) => view.removePending(entry),
      failed: (entry, reason) => {
        view.failPending(entry, reason, editAgain);
        if ($('composer-input').value === '') editAgain(entry.text);
      },
    },
  });
  view.start(nickname, channel, transport.name);
  updateTitle();
  view.log(`joining #${channel} as ${nickname} over ${transport.name}`);
  transport.start();
  $('composer-input').focus();
}

/** Puts a refused message's text back into the composer. */
function editAgain(text) {
  const input = $('composer-input');
  input.value = text;
  fitComposer();
  input.focus();
}

function sendComposed() {
  const input = $('composer-input');
  const text = input.value;
  if (text.trim() === '' || !transport) return;
  if (transport.send(text)) {
    input.value = '';
    fitComposer();
  } else {
    view.addNotice('Not connected: the message was kept, send it again once online.');
  }
}

/** Grows the composer with its text, up to the CSS max-height. */
function fitComposer() {
  const input = $('composer-input');
  input.style.height = 'auto';
  input.style.height = `${input.scrollHeight}px`;
}

$('join-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const nickname = token ? (tokenSubject(token) ?? '') : $('join-nickname').value.trim();
  const channel = $('join-channel').value.trim();
  const problem = nicknameProblem(nickname) || (CHANNEL_PATTERN.test(channel) ? '' : 'Channel names use letters, digits and _ . : @ -');
  if (problem) {
    $('join-error').textContent = problem;
    return;
  }
  localStorage.setItem(TRANSPORT_KEY, $('join-transport').value);
  join(nickname, channel);
});

$('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  sendComposed();
});

$('composer-input').addEventListener('keydown', (event) => {
  // Enter sends; Shift+Enter (and Enter while an IME composes) is a newline.
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendComposed();
  }
});
$('composer-input').addEventListener('input', fitComposer);

$('change').addEventListener('click', () => (token ? showChannelPicker() : showJoinForm()));

/** The server refuses this page's token: say why, and connect no more. */
function showRefused(refusal) {
  transport?.stop();
  transport = null;
  view.log(`refused: ${refusal.code} ${refusal.message ?? ''}`, 'bad');
  $('chat-view').hidden = true;
  $('join-view').hidden = false;
  $('change').hidden = true;
  $('join-form').hidden = true;
  $('refused').hidden = false;
  $('refused-reason').textContent = refusalText(refusal);
  $('refused').dataset.code = refusal.code;
}

/** Token mode: the name is the token's; only the channel can change. */
function showChannelPicker() {
  showJoinForm();
  $('join-nickname').value = tokenSubject(token) ?? '';
  $('join-nickname').readOnly = true;
}

$('open-channel').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = $('open-channel-name');
  const name = input.value.trim().replace(/^#/, '');
  if (!CHANNEL_PATTERN.test(name)) {
    view.log('Channel names use letters, digits and _ . : @ -', 'bad');
    return;
  }
  input.value = '';
  channels.open(name);
});

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && unseen > 0) {
    unseen = 0;
    updateTitle();
  }
});

window.addEventListener('hashchange', () => {
  const nickname = token ? tokenSubject(token) : localStorage.getItem(NICKNAME_KEY);
  if (transport && nickname && channelFromHash() !== transport.channel) join(nickname, channelFromHash());
});

// Socket.IO is offered when the server serves its client (--socketio-client).
socketIoAvailable().then((available) => {
  $('transport-socketio').hidden = !available;
});

channels.start({ tokenMode: Boolean(token) });

/** Joins at once when the page knows who the user is (a token, or a
 *  nickname from an earlier visit); a server that refuses the page is
 *  said to, before anything connects. */
async function begin() {
  const refusal = await tokenRefusal(token);
  if (refusal) {
    showRefused(refusal);
    return;
  }
  const remembered = token ? tokenSubject(token) : localStorage.getItem(NICKNAME_KEY);
  if (remembered && !nicknameProblem(remembered)) {
    join(remembered, channelFromHash());
  } else {
    showJoinForm();
  }
}
begin();
