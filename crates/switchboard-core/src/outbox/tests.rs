//! The outbox under real sockets and threads.
use super::*;
use std::io;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicUsize;
use std::task::{Wake, Waker};
use switchboard_ws::CloseCode;

struct CountingWaker(AtomicUsize);
impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    (counter.clone(), Waker::from(counter))
}

/// An empty outbox whose task (`cx`) waits for a frame.
fn waiting_outbox(cx: &mut Context<'_>) -> (Arc<Outbox>, VecDeque<Bytes>) {
    let outbox = Arc::new(Outbox::new(100));
    let mut taken = VecDeque::new();
    assert!(outbox.poll_take(cx, &mut taken, true).is_pending());
    (outbox, taken)
}

#[test]
fn refuses_frames_past_the_byte_limit() {
    let outbox = Arc::new(Outbox::new(10));
    outbox.try_push(Bytes::from_static(b"123456")).unwrap();
    assert_eq!(
        outbox.try_push(Bytes::from_static(b"123456")),
        Err(PushError::Full)
    );
    assert_eq!(outbox.queued_bytes(), 6);
}

#[test]
fn a_single_oversized_frame_still_fits_an_empty_queue() {
    let outbox = Arc::new(Outbox::new(4));
    outbox.try_push(Bytes::from_static(b"123456")).unwrap();
}

#[test]
fn wakes_once_per_batch_and_hands_over_everything() {
    let (counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let (outbox, mut taken) = waiting_outbox(&mut cx);
    outbox.try_push(Bytes::from_static(b"a")).unwrap();
    outbox.try_push(Bytes::from_static(b"b")).unwrap();
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    let Poll::Ready(t) = outbox.poll_take(&mut cx, &mut taken, true) else {
        panic!("frames were queued")
    };
    assert_eq!(t.bytes, 2);
    assert_eq!(taken, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    assert_eq!(outbox.queued_bytes(), 0);
}

#[test]
fn deferred_wakes_come_when_released() {
    let (counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let (outbox, _taken) = waiting_outbox(&mut cx);
    let held = defer_wakes(|| outbox.try_push(Bytes::from_static(b"a")).unwrap());
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    assert_eq!(outbox.queued_bytes(), 1, "queued at once");
    held.wake_all();
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
}

#[test]
fn frames_wait_while_the_connection_is_busy_but_a_close_does_not() {
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let outbox = Arc::new(Outbox::new(100));
    let mut taken = VecDeque::new();
    outbox.try_push(Bytes::from_static(b"a")).unwrap();
    assert!(outbox.poll_take(&mut cx, &mut taken, false).is_pending());
    assert_eq!(outbox.queued_bytes(), 1);
    outbox.close(CloseFrame::new(CloseCode::TRY_AGAIN_LATER, "slow"));
    assert!(outbox.poll_take(&mut cx, &mut taken, false).is_ready());
    assert_eq!(taken.len(), 1);
}

#[test]
fn close_comes_after_queued_frames_and_stops_pushes() {
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let outbox = Arc::new(Outbox::new(100));
    outbox.try_push(Bytes::from_static(b"a")).unwrap();
    outbox.close(CloseFrame::new(CloseCode::GOING_AWAY, "bye"));
    outbox.close(CloseFrame::new(CloseCode::NORMAL, "ignored"));
    assert_eq!(
        outbox.try_push(Bytes::from_static(b"b")),
        Err(PushError::Closed)
    );
    let mut taken = VecDeque::new();
    let Poll::Ready(t) = outbox.poll_take(&mut cx, &mut taken, true) else {
        panic!("a close was requested")
    };
    assert_eq!(t.close.unwrap().code, CloseCode::GOING_AWAY);
    assert_eq!(taken.len(), 1);
}

/// An outbox lending one end of a socket pair, whose task (`cx`) waits
/// for frames; the other end is what the peer reads.
fn lending_outbox(cx: &mut Context<'_>) -> (Arc<Outbox>, UnixStream, UnixStream) {
    let (ours, peer) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.set_nonblocking(true).unwrap();
    let outbox = Arc::new(Outbox::new(8 << 20));
    assert!(
        outbox
            .poll_take(cx, &mut VecDeque::new(), true)
            .is_pending()
    );
    outbox.lend_socket(Arc::new(ours.try_clone().unwrap()));
    (outbox, ours, peer)
}

/// Everything the peer can read right now.
fn read_now(peer: &mut UnixStream) -> Vec<u8> {
    let mut read = Vec::new();
    let mut chunk = [0; 64 * 1024];
    loop {
        match peer.read(&mut chunk) {
            Ok(0) => return read,
            Ok(n) => read.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return read,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn broadcast(outbox: &Arc<Outbox>, frames: &[Bytes]) {
    defer_wakes(|| {
        for frame in frames {
            outbox.try_push(frame.clone()).unwrap();
        }
    })
    .wake_all();
}

#[test]
fn a_broadcast_is_written_through_a_lent_socket_without_waking_the_task() {
    let (counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let (outbox, _ours, mut peer) = lending_outbox(&mut cx);
    assert!(!outbox.take_wrote_through());
    broadcast(
        &outbox,
        &[Bytes::from_static(b"one,"), Bytes::from_static(b"two")],
    );
    assert_eq!(read_now(&mut peer), b"one,two");
    assert_eq!(counter.0.load(Ordering::SeqCst), 0, "the task slept on");
    assert_eq!(outbox.queued_bytes(), 0);
    assert!(outbox.take_wrote_through(), "the task can tell");
    assert!(!outbox.take_wrote_through(), "once");
}

#[test]
fn waking_the_tasks_writes_nothing_through() {
    let (counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let (outbox, _ours, mut peer) = lending_outbox(&mut cx);
    defer_wakes(|| outbox.try_push(Bytes::from_static(b"one")).unwrap()).wake_tasks();
    assert_eq!(read_now(&mut peer), b"", "left to the task");
    assert!(!outbox.take_wrote_through());
    assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the task is told");
    let mut taken = VecDeque::new();
    assert!(outbox.poll_take(&mut cx, &mut taken, true).is_ready());
    assert_eq!(taken, [Bytes::from_static(b"one")]);
}

#[test]
fn frames_wait_for_the_task_while_it_writes_its_own() {
    let (counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let (outbox, _ours, mut peer) = lending_outbox(&mut cx);
    let mut own = VecDeque::from([Bytes::from_static(b"pong")]);
    assert_eq!(outbox.claim_socket(&mut own), 0);
    broadcast(&outbox, &[Bytes::from_static(b"message")]);
    assert_eq!(read_now(&mut peer), b"", "only the task writes now");
    assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the task is told");
    outbox.release_socket();
    let mut taken = VecDeque::new();
    assert!(outbox.poll_take(&mut cx, &mut taken, true).is_ready());
    assert_eq!(taken, [Bytes::from_static(b"message")]);
    // Taking frames claims the socket until the task releases it.
    broadcast(&outbox, &[Bytes::from_static(b"later")]);
    assert_eq!(read_now(&mut peer), b"");
    outbox.release_socket();
    assert!(outbox.poll_take(&mut cx, &mut taken, true).is_ready());
    outbox.release_socket();
    broadcast(&outbox, &[Bytes::from_static(b"last")]);
    assert_eq!(read_now(&mut peer), b"last");
}

#[test]
fn the_rest_of_a_frame_that_did_not_fit_goes_first_and_wakes_the_task() {
    let (counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let (outbox, _ours, mut peer) = lending_outbox(&mut cx);
    let big: Vec<u8> = (0..4 << 20).map(|i| i as u8).collect();
    broadcast(
        &outbox,
        &[Bytes::from(big.clone()), Bytes::from_static(b"next")],
    );
    assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the task finishes it");
    let written = read_now(&mut peer);
    assert!(
        !written.is_empty() && written.len() < big.len(),
        "{}",
        written.len()
    );
    assert_eq!(outbox.queued_bytes(), big.len() - written.len() + 4);
    // Its own frames go after the rest of the broadcast.
    let mut own = VecDeque::from([Bytes::from_static(b"pong")]);
    let claimed = outbox.claim_socket(&mut own);
    assert_eq!(claimed, big.len() - written.len() + 4);
    let sent: Vec<u8> = written
        .into_iter()
        .chain(own.iter().flatten().copied())
        .collect();
    assert_eq!(&sent[..big.len()], &big[..]);
    assert_eq!(&sent[big.len()..], b"nextpong");
}

#[test]
fn taking_the_socket_back_hands_over_a_partly_written_frame() {
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let (outbox, _ours, mut peer) = lending_outbox(&mut cx);
    let big = Bytes::from(vec![7u8; 4 << 20]);
    broadcast(&outbox, &[big.clone(), Bytes::from_static(b"whole")]);
    let written = read_now(&mut peer).len();
    let rest = outbox.take_back_socket().expect("a frame was cut");
    assert_eq!(rest, big.slice(written..));
    assert_eq!(outbox.queued_bytes(), 5, "whole frames stay queued");
    assert_eq!(outbox.take_back_socket(), None);
    broadcast(&outbox, &[]);
    outbox.try_push(Bytes::from_static(b"unwritten")).unwrap();
    assert_eq!(
        read_now(&mut peer),
        b"",
        "nothing is written through any more"
    );
}

/// One record of the stress test below: a marker, who wrote it, its
/// number in that writer's sequence, and a body of its own length.
fn record(kind: u8, seq: u32, len: usize) -> Bytes {
    let mut record = vec![0xA5, kind];
    record.extend_from_slice(&seq.to_le_bytes());
    record.extend_from_slice(&(len as u16).to_le_bytes());
    record.resize(record.len() + len, seq as u8);
    Bytes::from(record)
}

/// Wakes the thread playing the connection task.
struct Unpark(std::thread::Thread);
impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The connection task's side of the protocol, as `Connection::poll_run`
/// drives it: take the queue once the last batch is out, claim the
/// socket for frames of its own, write, release when all is written.
/// Its own frames come one per `BROADCASTS / own` broadcasts pushed;
/// `emitted` counts them.
fn play_task(
    outbox: &Outbox,
    mut socket: std::net::TcpStream,
    own: u32,
    pushed: &AtomicUsize,
    emitted: &AtomicUsize,
) {
    use std::io::Write;
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut send: VecDeque<Bytes> = VecDeque::new();
    let (mut holds, mut own_sent) = (false, 0);
    let mut rng = fastrand::Rng::with_seed(11);
    let every = (BROADCASTS / own) as usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let broadcast = pushed.load(Ordering::SeqCst);
        let idle = own_sent == own && send.is_empty() && outbox.queued_bytes() == 0;
        if idle && broadcast == BROADCASTS as usize {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task never finished"
        );
        let mut progressed = false;
        let take = send.is_empty();
        if outbox.poll_take(&mut cx, &mut send, take).is_ready() {
            holds = true;
            progressed = true;
        }
        if !holds && !send.is_empty() {
            outbox.claim_socket(&mut send);
            holds = true;
        }
        while let Some(front) = send.front_mut() {
            match socket.write(front) {
                Ok(n) if n == front.len() => drop(send.pop_front()),
                Ok(n) => *front = front.slice(n..),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("task write: {e}"),
            }
            progressed = true;
        }
        if holds && send.is_empty() {
            outbox.release_socket();
            holds = false;
        }
        // Last, as a reply to input is: it waits in `send` for the next
        // round, which claims the socket for it.
        if own_sent < own && broadcast >= every * (own_sent as usize + 1) {
            send.push_back(record(1, own_sent, rng.usize(1..600)));
            own_sent += 1;
            emitted.store(own_sent as usize, Ordering::SeqCst);
            progressed = true;
        }
        if !progressed {
            std::thread::park_timeout(std::time::Duration::from_micros(100));
        }
    }
}

/// Reads `count` records, pausing now and then so that the socket fills
/// and the task takes over; checks every record arrives whole, and
/// returns each writer's sequence numbers in order and how often the
/// writer changed from one record to the next.
fn read_records(mut peer: std::net::TcpStream, count: usize) -> ([Vec<u32>; 2], usize) {
    let mut seen: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    let (mut last_kind, mut switches) = (0, 0);
    let mut buf = Vec::new();
    let mut chunk = [0; 64 * 1024];
    let mut rng = fastrand::Rng::with_seed(5);
    peer.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    while seen[0].len() + seen[1].len() < count {
        if rng.u8(..) < 16 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let n = peer.read(&mut chunk).expect("records stopped coming");
        assert!(n > 0, "the socket closed early");
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while buf.len() - at >= 8 {
            assert_eq!(buf[at], 0xA5, "a record was cut or interleaved");
            let kind = buf[at + 1] as usize;
            let seq = u32::from_le_bytes(buf[at + 2..at + 6].try_into().unwrap());
            let len = u16::from_le_bytes([buf[at + 6], buf[at + 7]]) as usize;
            if buf.len() - at < 8 + len {
                break;
            }
            let body = &buf[at + 8..at + 8 + len];
            assert!(body.iter().all(|&b| b == seq as u8), "record {seq} garbled");
            seen[kind].push(seq);
            switches += usize::from(kind != last_kind);
            last_kind = kind;
            at += 8 + len;
        }
        buf.drain(..at);
    }
    (seen, switches)
}

const BROADCASTS: u32 = 2_000;

/// The write-through protocol under real concurrency: a broadcasting
/// thread writes through while a thread playing the connection task
/// claims the socket for frames of its own and takes the queue over
/// whenever the socket is full. It fails (records out of order, or cut
/// into each other) if broadcasts are written through while the task
/// writes.
#[test]
fn broadcasts_written_through_and_the_tasks_own_frames_interleave_whole_and_in_order() {
    const OWN: u32 = 200;
    // Loopback TCP with small buffers, which the reader's pauses fill.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let ours = listener.accept().unwrap().0;
    ours.set_nonblocking(true).unwrap();
    ours.set_nodelay(true).unwrap();
    // Not below the loopback MSS, or TCP itself stalls on the window.
    socket2::SockRef::from(&ours)
        .set_send_buffer_size(32 * 1024)
        .unwrap();
    socket2::SockRef::from(&peer)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    let outbox = Arc::new(Outbox::new(1 << 20));
    outbox.lend_socket(Arc::new(ours.try_clone().unwrap()));
    let pushed = Arc::new(AtomicUsize::new(0));
    let emitted = Arc::new(AtomicUsize::new(0));
    let task = {
        let (outbox, pushed, emitted) = (outbox.clone(), pushed.clone(), emitted.clone());
        let socket = ours.try_clone().unwrap();
        std::thread::spawn(move || play_task(&outbox, socket, OWN, &pushed, &emitted))
    };
    let reader = std::thread::spawn(move || read_records(peer, (BROADCASTS + OWN) as usize));
    let mut rng = fastrand::Rng::with_seed(3);
    let every = BROADCASTS / OWN;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for seq in 0..BROADCASTS {
        // Take turns with the task: its next frame of its own first
        // (written or not), so the two kinds meet on the socket.
        while (emitted.load(Ordering::SeqCst) as u32) < seq / every {
            assert!(std::time::Instant::now() < deadline, "the task fell silent");
            std::thread::yield_now();
        }
        let frame = record(0, seq, rng.usize(1..16_000));
        loop {
            let mut pushed_now = Ok(());
            defer_wakes(|| pushed_now = outbox.try_push(frame.clone())).wake_all();
            match pushed_now {
                Ok(()) => break,
                Err(PushError::Full) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the queue never drained"
                    );
                    std::thread::sleep(std::time::Duration::from_micros(50))
                }
                Err(PushError::Closed) => panic!("the outbox closed"),
            }
        }
        pushed.fetch_add(1, Ordering::SeqCst);
        // Paced, so that the queue often empties and the next broadcast
        // is written through, into a socket the reader left part full.
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
    task.join().expect("task");
    let ([broadcasts, own], switches) = reader.join().expect("reader");
    assert_eq!(broadcasts, (0..BROADCASTS).collect::<Vec<_>>());
    assert_eq!(own, (0..OWN).collect::<Vec<_>>());
    // The two kinds of writer really took turns on the socket.
    assert!(switches > 20, "only {switches} switches between writers");
    outbox.mark_closed();
    drop(ours);
}

#[test]
fn an_outbox_keeping_positions_hands_each_frame_its_own() {
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let outbox = Arc::new(Outbox::keeping_positions(1 << 20));
    assert!(outbox.keeps_positions());
    let lobby = crate::ChannelName::parse("lobby").unwrap();
    outbox.try_push(Bytes::from_static(b"preamble")).unwrap();
    outbox
        .try_push_at(Bytes::from_static(b"m7"), Some((lobby.clone(), 7)))
        .unwrap();
    let (mut frames, mut positions) = (VecDeque::new(), VecDeque::new());
    assert!(
        outbox
            .poll_take_positioned(&mut cx, &mut frames, &mut positions)
            .is_ready()
    );
    outbox
        .try_push_at(Bytes::from_static(b"m8"), Some((lobby.clone(), 8)))
        .unwrap();
    assert!(
        outbox
            .poll_take_positioned(&mut cx, &mut frames, &mut positions)
            .is_ready()
    );
    assert_eq!(frames, [&b"preamble"[..], b"m7", b"m8"]);
    assert_eq!(
        positions,
        [None, Some((lobby.clone(), 7)), Some((lobby, 8))]
    );
    // A plain outbox keeps none.
    assert!(!Outbox::new(1024).keeps_positions());
}

#[test]
fn an_outbox_found_empty_keeps_no_room_from_the_burst_before() {
    let outbox = Arc::new(Outbox::new(1 << 20));
    let mut cx = Context::from_waker(Waker::noop());
    // A frame of the task's own is still queued, so the burst is copied
    // out and its room stays behind in the outbox.
    let mut into = VecDeque::from([Bytes::from_static(b"own")]);
    for _ in 0..64 {
        outbox.try_push(Bytes::from_static(b"join")).unwrap();
    }
    assert!(outbox.poll_take(&mut cx, &mut into, true).is_ready());
    assert_eq!(into.len(), 65);
    assert!(outbox.state.lock().frames.capacity() >= 64);
    into.clear();
    // Written, and nothing new: the connection idles with no room kept.
    assert!(outbox.poll_take(&mut cx, &mut into, true).is_pending());
    assert!(outbox.state.lock().frames.capacity() <= KEPT_FRAME_SLOTS);
}
