//! Connection-state recovery (Socket.IO 4.6+): a client that comes back
//! within `--recovery-window` names its session (`pid`) and the recovery
//! offset of the last event it received; it gets its channels back, every
//! message it missed replayed from history, and `socket.recovered`.
//!
//! The offset names the session's position in each of its channels
//! ([`RecoveryPositions`]), so it needs nothing from this process: after a
//! restart it is enough. What is kept here, per session, is what the
//! offset cannot say: when the session ended (the window), and where each
//! subscription started, for a client that received no message in it.
//!
//! [`RecoveryPositions`]: switchboard_core::recovery::RecoveryPositions

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard_core::recovery::parse_offsets;
use switchboard_core::{ChannelName, Username};

use super::session::Session;

/// The sessions that may be recovered.
pub struct Recovery {
    window: Duration,
    /// A restart forgets every session: offsets are honoured for a window
    /// after the start.
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_pid: HashMap<Arc<str>, Record>,
    /// Ended sessions in the order they ended, to forget them in order.
    ended: VecDeque<(Instant, Arc<str>)>,
}

struct Record {
    username: Username,
    /// The session while it lives.
    live: Weak<Session>,
    /// When it ended, and where each of its subscriptions started.
    ended: Option<(Instant, Vec<(ChannelName, u64)>)>,
}

/// What a returning client gets back.
pub struct Resumed {
    /// Each channel and the offset to replay after.
    pub channels: Vec<(ChannelName, u64)>,
    /// The session it left, if the server has not noticed yet: closed once
    /// the new one has its channels.
    pub previous: Option<Arc<Session>>,
}

impl Recovery {
    pub fn new(window: Duration) -> Self {
        Recovery {
            window,
            started: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    /// A session of `username` under `pid` is live.
    pub fn live(&self, pid: Arc<str>, username: Username, session: &Arc<Session>) {
        let record = Record {
            username,
            live: Arc::downgrade(session),
            ended: None,
        };
        self.state.lock().by_pid.insert(pid, record);
    }

    /// The session under `pid` ended; its subscriptions started at
    /// `joined_at`. Nothing if another session took the pid over.
    pub fn ended(
        &self,
        pid: &Arc<str>,
        session: &Weak<Session>,
        joined_at: Vec<(ChannelName, u64)>,
    ) {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.forget_older_than(now, self.window);
        let Some(record) = state.by_pid.get_mut(pid) else {
            return;
        };
        if !Weak::ptr_eq(&record.live, session) {
            return;
        }
        record.live = Weak::new();
        record.ended = Some((now, joined_at));
        state.ended.push_back((now, pid.clone()));
    }

    /// The channels and offsets `username` resumes with `pid`, the
    /// session's id, and `offset`, the last event's recovery offset;
    /// `None` if it cannot be recovered (unknown, expired, another user's).
    pub fn resume(&self, pid: &str, offset: Option<&str>, username: &Username) -> Option<Resumed> {
        let from_offset = match offset {
            Some(offset) => Some(parse_offsets(offset)?),
            None => None,
        };
        let mut state = self.state.lock();
        state.forget_older_than(Instant::now(), self.window);
        let Some(record) = state.by_pid.remove(pid) else {
            // Not known here: the server restarted since, if within the
            // window, and the offset holds all there is.
            return from_offset
                .filter(|_| self.started.elapsed() <= self.window)
                .map(|channels| Resumed {
                    channels,
                    previous: None,
                });
        };
        if record.username != *username {
            state.by_pid.insert(pid.into(), record);
            return None;
        }
        let joined_at = record
            .ended
            .map(|(_, joined_at)| joined_at)
            .unwrap_or_default();
        let mut channels = from_offset.unwrap_or_default();
        for (channel, start) in joined_at {
            if !channels.iter().any(|(c, _)| *c == channel) {
                channels.push((channel, start));
            }
        }
        Some(Resumed {
            channels,
            previous: record.live.upgrade(),
        })
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
            if self
                .by_pid
                .get(&pid)
                .is_some_and(|r| r.ended.as_ref().is_some_and(|(at, _)| *at == ended))
            {
                self.by_pid.remove(&pid);
            }
        }
    }
}
