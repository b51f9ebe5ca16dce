//! Connection-state recovery (Socket.IO 4.6+): a client that comes back
//! within `--recovery-window` names its session (`pid`) and the recovery
//! offset of the last event it received; it gets its channels back, every
//! message it missed replayed from history, and `socket.recovered`.
//!
//! The offset names the session's position in each of its channels
//! ([`RecoveryPositions`]), so it needs nothing from this process: after a
//! restart it is enough. What is kept here, per session that ended, is
//! what the offset cannot say: when it ended (the window), and where each
//! subscription started, for a client that received no message in it.
//! Live sessions cost nothing here. A client that comes back before the
//! server noticed its old session drop gets its channels as well; the old
//! session goes when its heartbeat fails. With the Redis engine a client
//! may come back to any node: one that never knew the session honours the
//! offset alone, as after a restart (a subscription that had received no
//! message yet is then not restored).
//!
//! [`RecoveryPositions`]: switchboard_core::recovery::RecoveryPositions

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard_core::recovery::parse_offsets;
use switchboard_core::{ChannelName, Username};

use super::session::RandomId;

/// The sessions that may be recovered.
pub struct Recovery {
    window: Duration,
    /// A restart forgets every session: offsets are honoured for a window
    /// after the start.
    started: Instant,
    /// Sessions may have lived on other nodes (the Redis engine): an
    /// offset is honoured whatever the session.
    any_node: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Live sessions: 15 bytes each, their whole cost here.
    live: HashSet<Pid>,
    by_pid: HashMap<Pid, Record>,
    /// Ended sessions in the order they ended, to forget them in order.
    ended: VecDeque<(Instant, Pid)>,
}

/// A session's private id.
pub type Pid = RandomId;

/// An ended session.
struct Record {
    username: Username,
    ended: Instant,
    /// Where each of its subscriptions started.
    joined_at: Vec<(ChannelName, u64)>,
}

/// What a returning client gets back.
#[derive(Debug)]
pub struct Resumed {
    /// Each channel and the offset to replay after.
    pub channels: Vec<(ChannelName, u64)>,
}

impl Recovery {
    pub fn new(window: Duration, any_node: bool) -> Self {
        Recovery {
            window,
            started: Instant::now(),
            any_node,
            state: Mutex::new(State::default()),
        }
    }

    /// A session under `pid` is live.
    pub fn live(&self, pid: Pid) {
        self.state.lock().live.insert(pid);
    }

    /// The session of `username` under `pid` ended; its subscriptions
    /// started at `joined_at`.
    pub fn ended(&self, pid: Pid, username: Username, joined_at: Vec<(ChannelName, u64)>) {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.forget_older_than(now, self.window);
        state.live.remove(&pid);
        let record = Record {
            username,
            ended: now,
            joined_at,
        };
        state.by_pid.insert(pid, record);
        state.ended.push_back((now, pid));
    }

    /// The channels and offsets `username` resumes with `pid`, the
    /// session's id, and `offset`, the last event's recovery offset;
    /// `None` if it cannot be recovered (unknown, expired, another user's).
    pub fn resume(&self, pid: Pid, offset: Option<&str>, username: &Username) -> Option<Resumed> {
        let from_offset = match offset {
            Some(offset) => Some(parse_offsets(offset)?),
            None => None,
        };
        let mut state = self.state.lock();
        state.forget_older_than(Instant::now(), self.window);
        let Some(record) = state.by_pid.remove(&pid) else {
            // Not ended here: still live (its drop not yet noticed), or
            // unknown because the server restarted since, within the
            // window, or the session was on another node; in each case the
            // offset holds all there is.
            let live_or_restarted =
                state.live.contains(&pid) || self.started.elapsed() <= self.window || self.any_node;
            return from_offset
                .filter(|_| live_or_restarted)
                .map(|channels| Resumed { channels });
        };
        if record.username != *username {
            state.by_pid.insert(pid, record);
            return None;
        }
        let mut channels = from_offset.unwrap_or_default();
        for (channel, start) in record.joined_at {
            if !channels.iter().any(|(c, _)| *c == channel) {
                channels.push((channel, start));
            }
        }
        Some(Resumed { channels })
    }
}

impl State {
    fn forget_older_than(&mut self, now: Instant, window: Duration) {
        while let Some((ended, _)) = self.ended.front() {
            if now.duration_since(*ended) <= window {
                break;
            }
            let (ended, pid) = self.ended.pop_front().expect("checked");
            // Only if the record is still that ended session.
            if self.by_pid.get(&pid).is_some_and(|r| r.ended == ended) {
                self.by_pid.remove(&pid);
            }
        }
    }
}
