//! Writing a connection's queue straight into its lent socket, from the
//! thread that delivers, while the connection's task writes nothing.

use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use super::{Outbox, State};

impl Outbox {
    /// Writes the queue straight into the lent socket if the task is not
    /// writing; wakes the task for whatever is left.
    pub(super) fn write_through_or_wake(&self) {
        let mut state = self.state.lock();
        if state.can_write_through() {
            // Errors are left to the task: its own write meets them and ends
            // the connection.
            let _ = state.write_through();
            if state.frames.is_empty() {
                drop(state);
                if self.waiting_for_room.swap(false, Ordering::SeqCst) {
                    self.room.notify_waiters();
                }
                return;
            }
        }
        drop(state);
        self.waker.wake();
    }
}

/// Most frames handed to one `sendmsg`.
const MAX_IOVECS: usize = 64;

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("frames", &self.frames.len())
            .field("bytes", &self.bytes)
            .field("closed", &self.closed)
            .field("lent_socket", &self.socket.is_some())
            .field("task_writing", &self.task_writing)
            .finish_non_exhaustive()
    }
}

impl State {
    fn can_write_through(&self) -> bool {
        let open = !self.closed && self.close.is_none();
        self.socket.is_some() && open && !self.task_writing
    }

    /// Writes queued frames until the queue is empty or the socket is full.
    fn write_through(&mut self) -> io::Result<()> {
        // Out of `self` while writing, so the queue can change meanwhile;
        // back before the lock is released.
        let Some(socket) = self.socket.take() else {
            return Ok(());
        };
        let written = self.write_queue_to(&*socket);
        self.socket = Some(socket);
        written
    }

    fn write_queue_to(&mut self, socket: &(dyn AsFd + Send + Sync)) -> io::Result<()> {
        let socket = socket2::SockRef::from(&socket);
        let batch = self.frames.len();
        while !self.frames.is_empty() {
            let written = if self.frames.len() == 1 {
                socket.send_with_flags(&self.frames[0], libc::MSG_NOSIGNAL)?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                for (slot, frame) in slices.iter_mut().zip(&self.frames) {
                    *slot = IoSlice::new(frame);
                }
                let count = self.frames.len().min(MAX_IOVECS);
                socket.send_vectored_with_flags(&slices[..count], libc::MSG_NOSIGNAL)?
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.wrote_through = true;
            self.advance(written);
        }
        if batch <= super::KEPT_FRAME_SLOTS && self.frames.capacity() > super::KEPT_FRAME_SLOTS {
            self.frames = std::collections::VecDeque::new();
        }
        Ok(())
    }

    /// Drops `written` bytes from the front; a frame written in part keeps
    /// its rest at the front.
    fn advance(&mut self, mut written: usize) {
        self.bytes -= written;
        while written > 0 {
            let front = self.frames.front_mut().expect("wrote more than queued");
            if written < front.len() {
                *front = front.slice(written..);
                self.front_started = true;
                return;
            }
            written -= front.len();
            self.frames.pop_front();
            self.front_started = false;
        }
    }
}
