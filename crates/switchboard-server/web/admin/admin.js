// The admin page: polls /admin/api/overview every second and shows it;
// rates are differences between two polls of the servers' totals. The
// browser sends the page's HTTP Basic credentials with every request.

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);

let previous = null;

async function refresh() {
  let overview;
  try {
    const response = await fetch('/admin/api/overview', { cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    overview = await response.json();
  } catch (error) {
    setStatus('error', `overview unavailable: ${error.message}`);
    return;
  }
  setStatus('live', 'live');
  for (const [transport, count] of Object.entries(overview.connections)) {
    const cell = $(`connections-${transport}`);
    if (cell) cell.textContent = String(count);
  }
  const now = performance.now();
  if (previous) {
    const seconds = (now - previous.at) / 1000;
    $('published-rate').textContent = rate(overview.published_total - previous.published, seconds);
    $('delivered-rate').textContent = rate(overview.delivered_total - previous.delivered, seconds);
  }
  previous = { at: now, published: overview.published_total, delivered: overview.delivered_total };
  showChannels(overview.channels);
}

function rate(count, seconds) {
  return seconds > 0 ? (count / seconds).toFixed(1) : '–';
}

function setStatus(state, text) {
  const status = $('status');
  status.dataset.state = state;
  status.textContent = text;
}

function showChannels(channels) {
  const body = $('channels');
  body.replaceChildren(...channels.map(channelRow));
  $('no-channels').hidden = channels.length > 0;
}

function channelRow({ channel, subscribers, last_offset: lastOffset, presence }) {
  const row = document.createElement('tr');
  row.dataset.channel = channel;
  const cells = [channel, String(subscribers), String(lastOffset)].map((text, i) => {
    const cell = document.createElement('td');
    cell.textContent = text;
    if (i > 0) cell.className = 'number';
    return cell;
  });
  const online = document.createElement('td');
  const users = document.createElement('ul');
  users.className = 'users';
  for (const username of presence) users.append(userItem(username));
  online.append(users);
  row.append(...cells, online);
  return row;
}

function userItem(username) {
  const item = document.createElement('li');
  item.dataset.username = username;
  const name = document.createElement('span');
  name.textContent = username;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'disconnect';
  button.textContent = 'Disconnect';
  button.title = `Close every connection of ${username} on this node`;
  button.addEventListener('click', () => disconnect(username));
  item.append(name, button);
  return item;
}

async function disconnect(username) {
  const response = await fetch(`/admin/api/users/${encodeURIComponent(username)}/disconnect`, { method: 'POST' });
  const body = await response.json().catch(() => ({}));
  $('publish-result').textContent = response.ok
    ? `${username}: ${body.disconnected} connection(s) closed`
    : `disconnect refused: ${body.error?.message ?? response.status}`;
  refresh();
}

$('publish').addEventListener('submit', async (event) => {
  event.preventDefault();
  const channel = $('publish-channel').value.trim();
  const response = await fetch(`/admin/api/channels/${encodeURIComponent(channel)}/messages`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: $('publish-username').value.trim(), msg: $('publish-msg').value }),
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 201) {
    $('publish-result').textContent = `published to #${body.channel} at offset ${body.offset}`;
    $('publish-msg').value = '';
  } else {
    $('publish-result').textContent = `refused: ${body.error?.message ?? response.status}`;
  }
});

refresh();
setInterval(refresh, POLL_MS);
