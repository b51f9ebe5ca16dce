// What every transport of the page shares: the resume point (the last
// offset shown) and reconnecting with backoff.

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 15000;

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
   * @param {object} options.on  callbacks: state(s), message(m), presence(users),
   *   join(user), leave(user), reset(), log(text, kind), refused(reason)
   * @param {string} name  shown in the status bar
   */
  constructor({ user, channel, on }, name) {
    this.user = user;
    this.channel = channel;
    this.on = on;
    this.name = name;
    this.retryTimer = null;
    this.attempt = 0;
    this.stopped = true;
    // Resume point: the last offset handed to on.message.
    this.lastOffset = null;
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
    this.on.message(message);
  }
}
