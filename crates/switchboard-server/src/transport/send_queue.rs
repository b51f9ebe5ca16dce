//! The frames a connection's own task is writing: many per syscall, and
//! the rest of a partly written frame first.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use switchboard_core::outbox::KEPT_FRAME_SLOTS;
use tokio::io::AsyncWrite;

/// Frames being written, front first, with how much of the front is written.
#[derive(Debug, Default)]
pub struct SendQueue {
    pub frames: VecDeque<Bytes>,
    written: usize,
    /// Bytes not yet written.
    pub bytes: usize,
}

/// Most frames handed to one `writev`.
const MAX_IOVECS: usize = 64;

impl SendQueue {
    pub fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Puts the rest of a frame partly written elsewhere ahead of the queue,
    /// which has nothing written yet.
    pub fn push_front(&mut self, rest: Bytes) {
        debug_assert_eq!(self.written, 0);
        self.bytes += rest.len();
        self.frames.push_front(rest);
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Lets go of the room a burst made, once everything is written and
    /// the connection is idle.
    pub fn release_room(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > KEPT_FRAME_SLOTS {
            self.frames = VecDeque::new();
        }
    }

    /// Writes until the queue is empty or the socket is full, many frames per
    /// syscall.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let batch = self.frames.len();
        while let Some(front) = self.frames.front() {
            let n = if self.frames.len() == 1 {
                // The common case at a steady pace: one frame, one plain write.
                ready!(Pin::new(&mut *io).poll_write(cx, &front[self.written..]))?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (slot, frame) in slices.iter_mut().zip(&self.frames) {
                    let start = if count == 0 { self.written } else { 0 };
                    *slot = IoSlice::new(&frame[start..]);
                    count += 1;
                }
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        // A small batch after a burst: the room the burst made goes, so an
        // idle connection holds a few slots; a stream of big batches keeps it.
        if batch <= KEPT_FRAME_SLOTS && self.frames.capacity() > KEPT_FRAME_SLOTS {
            self.frames = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let front = self.frames.front().expect("wrote more than queued");
            let left = front.len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            self.frames.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Drains `queue` into a pipe that takes at most 7 bytes at a time, so
    /// every frame is written in pieces, and returns what the peer read.
    async fn write_through_narrow_pipe(mut queue: SendQueue) -> (Vec<u8>, SendQueue) {
        let (mut ours, mut theirs) = tokio::io::duplex(7);
        let total = queue.bytes;
        let writing = async {
            std::future::poll_fn(|cx| queue.poll_write(&mut ours, cx))
                .await
                .expect("write");
        };
        let mut read = vec![0; total];
        let reading = theirs.read_exact(&mut read);
        let ((), n) = tokio::join!(writing, reading);
        n.expect("read");
        (read, queue)
    }

    #[tokio::test]
    async fn one_frame_is_written_whole_across_partial_writes() {
        let mut queue = SendQueue::default();
        queue.push(Bytes::from_static(b"a single frame, longer than the pipe"));
        let (read, queue) = write_through_narrow_pipe(queue).await;
        assert_eq!(read, b"a single frame, longer than the pipe");
        assert!(queue.is_empty());
        assert_eq!((queue.bytes, queue.written), (0, 0));
    }

    #[tokio::test]
    async fn many_frames_are_written_in_order_across_partial_writes() {
        let mut queue = SendQueue::default();
        let frames: Vec<String> = (0..100).map(|i| format!("frame {i};")).collect();
        for frame in &frames {
            queue.push(Bytes::from(frame.clone()));
        }
        let (read, queue) = write_through_narrow_pipe(queue).await;
        assert_eq!(String::from_utf8(read).expect("utf-8"), frames.concat());
        assert!(queue.is_empty());
        assert_eq!((queue.bytes, queue.written), (0, 0));
    }

    #[test]
    fn an_emptied_queue_lets_its_room_go_when_idle() {
        let mut queue = SendQueue::default();
        for _ in 0..64 {
            queue.push(Bytes::from_static(b"frame"));
        }
        queue.release_room();
        assert_eq!(queue.frames.len(), 64, "nothing queued is dropped");
        queue.frames.clear();
        queue.bytes = 0;
        queue.release_room();
        assert!(queue.frames.capacity() <= KEPT_FRAME_SLOTS);
    }
}
