// Token mode (`--auth token`): the page's connection token, which the
// application hands over in the URL fragment (`#token=…`, or
// `#CHANNEL&token=…`: a fragment never reaches a server's logs) or in a
// `token` cookie. The fragment's token is kept for the tab and taken out of
// the address bar, so a copied link does not carry it.

const TOKEN_KEY = 'switchboard.token';

/** The token, if the page was given one. */
export function takeToken() {
  const parts = location.hash.slice(1).split('&');
  const given = parts.find((part) => part.startsWith('token='));
  if (given) {
    const token = decodeURIComponent(given.slice('token='.length));
    sessionStorage.setItem(TOKEN_KEY, token);
    const rest = parts.filter((part) => part !== given).join('&');
    history.replaceState(null, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
    return token;
  }
  const cookie = document.cookie.split('; ').find((c) => c.startsWith('token='));
  if (cookie) return decodeURIComponent(cookie.slice('token='.length));
  return sessionStorage.getItem(TOKEN_KEY);
}

/** The username a token names (its `sub`), read without verifying it:
 *  the server checks it, the page only shows it. */
export function tokenSubject(token) {
  try {
    const base64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
    const sub = JSON.parse(new TextDecoder().decode(bytes)).sub;
    return typeof sub === 'string' ? sub : null;
  } catch {
    return null;
  }
}

/** Why the server refuses connections with `token` (`{code, message}`), or
 *  null if it takes them. A plain GET of /ws says it before any upgrade:
 *  401 or 403 with the reason, 426 when the token (or none) is fine. */
export async function tokenRefusal(token) {
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  let response;
  try {
    response = await fetch(`/ws${query}`, { cache: 'no-store' });
  } catch {
    return null;
  }
  if (response.status !== 401 && response.status !== 403) return null;
  const body = await response.json().catch(() => ({}));
  return body.error ?? { code: `http_${response.status}`, message: '' };
}

/** What to tell the user about a refusal. */
export function refusalText({ code, message }) {
  switch (code) {
    case 'missing_token':
      return 'This chat needs you to sign in: open it from the application that hosts it.';
    case 'token_expired':
      return 'Your sign-in has expired: reload the chat from the application to sign in again.';
    case 'invalid_token':
      return `The server did not accept this sign-in (${message}).`;
    case 'forbidden':
      return `You may not join this channel (${message}).`;
    case 'origin_not_allowed':
      return 'This server does not take connections from pages of this site.';
    default:
      return `The server refused the connection: ${code} ${message ?? ''}`.trim();
  }
}

/** Headers that carry the token on the HTTP API. */
export function authorization(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}
