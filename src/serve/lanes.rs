//! HTTP mode's lanes: one per CPU, each a single-threaded async runtime — the first is the one that accepts
//! connections (and runs the server's chores and its storage pool's own task), the others a thread each — each serving
//! the connections handed to it from their first request to their close; and the idle timeout of each connection. A
//! request is read, answered and written on one thread: no task moved between threads, no other thread woken per
//! request — which a shared multi-threaded runtime does for nearly every request with a body (hyper's connection task
//! wakes itself to hand the body over, and a runtime that queues a woken task wakes an idle thread to steal it). A
//! connection's envelope requests are answered by [`super::fast`] until one it leaves to hyper arrives.

use super::handle;
use crate::service::Service;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};

/// How many lanes HTTP mode runs: `TOKIO_WORKER_THREADS` when set (what sets the number of a multi-threaded
/// runtime's threads too), else one per CPU the process may use.
pub fn count() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

/// The lanes of one server, and the turn for the next connection. The first lane is the runtime that accepts: its
/// connections are tasks beside the accept loop.
pub(super) struct Lanes {
    here: Conns,
    threads: Vec<Lane>,
    turn: usize,
}

/// A lane with a thread of its own: where its connections are handed, how many it has open, and a signal that it
/// has finished.
struct Lane {
    tx: mpsc::UnboundedSender<Handoff>,
    open: Arc<AtomicUsize>,
    done: oneshot::Receiver<()>,
}

/// A connection handed to a lane, with its place under the connection limit.
struct Handoff {
    stream: std::net::TcpStream,
    peer: std::net::IpAddr,
    slot: OwnedSemaphorePermit,
}

/// A connection's place: under the server's connection limit, and in its lane's count. Given back when dropped.
struct Open {
    _slot: OwnedSemaphorePermit,
    lane: Arc<AtomicUsize>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.lane.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One lane's connections, served as tasks of the runtime it runs on, and their count (read by the listener).
struct Conns {
    tasks: tokio::task::JoinSet<()>,
    open: Arc<AtomicUsize>,
    service: Arc<Service>,
    stop: watch::Receiver<bool>,
}

impl Conns {
    fn new(open: Arc<AtomicUsize>, service: Arc<Service>, stop: watch::Receiver<bool>) -> Self {
        Self { tasks: tokio::task::JoinSet::new(), open, service, stop }
    }

    /// Serve a connection, counted in `open` when it was handed; its place is given back when it ends.
    fn serve(&mut self, stream: tokio::net::TcpStream, peer: std::net::IpAddr, slot: OwnedSemaphorePermit) {
        let place = Open { _slot: slot, lane: self.open.clone() };
        self.tasks.spawn(connection(stream, peer, self.service.clone(), self.stop.clone(), place));
        // Reap finished connections so the set does not grow.
        while self.tasks.try_join_next().is_some() {}
    }

    /// Wait until every connection has ended (the stop signal finishes the requests in hand first).
    async fn finish(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Lanes {
    /// `count` lanes (at least one) serving `service`: this runtime and `count - 1` threads. Each stops taking
    /// connections once `stop` says so, and finishes the requests in hand.
    pub(super) fn start(
        count: usize,
        service: &Arc<Service>,
        stop: &watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let threads = (1..count.max(1))
            .map(|i| Lane::start(i, service.clone(), stop.clone()))
            .collect::<std::io::Result<Vec<_>>>()?;
        let here = Conns::new(Arc::default(), service.clone(), stop.clone());
        Ok(Self { here, threads, turn: 0 })
    }

    /// Hand an accepted connection to the lane with the fewest open connections (the next in turn among equals). A
    /// lane that has stopped (only once the server stops) gives it back, and it is served here.
    pub(super) fn hand(
        &mut self,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        slot: OwnedSemaphorePermit,
    ) {
        self.turn = self.turn.wrapping_add(1);
        let open = |i: usize| match i {
            0 => &self.here.open,
            _ => &self.threads[i - 1].open,
        };
        let i = least_open(self.turn, 1 + self.threads.len(), |i| open(i).load(Ordering::Relaxed));
        let here = match i.checked_sub(1).and_then(|t| self.threads.get(t)) {
            Some(lane) => lane.take(stream, peer.ip(), slot),
            None => Some((stream, slot)),
        };
        let Some((stream, slot)) = here else { return };
        self.here.open.fetch_add(1, Ordering::Relaxed);
        self.here.serve(stream, peer.ip(), slot);
    }

    /// Wait until every lane has finished its connections (once the stop signal is sent, or the lanes dropped).
    pub(super) async fn finish(self) {
        let mut done = Vec::new();
        for lane in self.threads {
            drop(lane.tx);
            done.push(lane.done);
        }
        self.here.finish().await;
        for d in done {
            let _ = d.await;
        }
    }
}

/// Of `n` lanes with `open(i)` connections each, the index of one with the fewest: the first from `turn` (modulo
/// `n`) among equals; 0 when there are none.
fn least_open(turn: usize, n: usize, open: impl Fn(usize) -> usize) -> usize {
    (0..n).map(|k| (turn + k) % n).min_by_key(|&i| open(i)).unwrap_or(0)
}

impl Lane {
    fn start(i: usize, service: Arc<Service>, stop: watch::Receiver<bool>) -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Handoff>();
        let (done_tx, done) = oneshot::channel();
        let open = Arc::new(AtomicUsize::new(0));
        let mut conns = Conns::new(open.clone(), service, stop.clone());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name(format!("wafer-http-{i}")).spawn(move || {
            rt.block_on(async move {
                let mut stopping = stop;
                loop {
                    // A dropped stop signal (the server's future dropped) stops the lane as a sent one does.
                    let handed = tokio::select! {
                        handed = rx.recv() => handed,
                        _ = stopping.wait_for(|s| *s) => None,
                    };
                    let Some(h) = handed else { break };
                    match tokio::net::TcpStream::from_std(h.stream) {
                        Ok(stream) => conns.serve(stream, h.peer, h.slot),
                        Err(_) => _ = conns.open.fetch_sub(1, Ordering::Relaxed), // closed; its slot dropped
                    }
                }
                drop(rx); // connections handed meanwhile are closed
                conns.finish().await;
            });
            let _ = done_tx.send(());
        })?;
        Ok(Self { tx, open, done })
    }

    /// Take a connection, counted from now; `None` once handed (or closed, should it not leave this runtime's
    /// reactor), or the connection and its slot back when this lane has stopped.
    fn take(
        &self,
        stream: tokio::net::TcpStream,
        peer: std::net::IpAddr,
        slot: OwnedSemaphorePermit,
    ) -> Option<(tokio::net::TcpStream, OwnedSemaphorePermit)> {
        // Out of this runtime's reactor, into the lane's.
        let stream = stream.into_std().ok()?;
        self.open.fetch_add(1, Ordering::Relaxed);
        let Err(mpsc::error::SendError(back)) = self.tx.send(Handoff { stream, peer, slot }) else {
            return None; // handed
        };
        self.open.fetch_sub(1, Ordering::Relaxed);
        let stream = tokio::net::TcpStream::from_std(back.stream).ok()?;
        Some((stream, back.slot))
    }
}

/// Serve one connection until it closes, its idle timeout passes, or the server stops (the request in hand is
/// finished first).
async fn connection(
    mut stream: tokio::net::TcpStream,
    peer: std::net::IpAddr,
    service: Arc<Service>,
    mut stop: watch::Receiver<bool>,
    open: Open,
) {
    use hyper_util::rt::TokioIo;
    let limits = service.options().http;
    // The client's address, written once per connection rather than once per request.
    let peer: Arc<str> = peer.to_string().into();
    let watch = Arc::new(IdleWatch::new());
    // The idle timer and the shutdown signal are watched by a task of their own, which sends what it saw: this
    // task, woken for nearly every byte of the connection, then polls one flag beside it.
    let (close_tx, mut close_rx) = oneshot::channel::<Close>();
    let idle = watch.clone();
    let watcher = tokio::spawn(async move {
        let why = tokio::select! {
            _ = idle.idle_for(limits.header_timeout) => Close::Idle,
            _ = stop.wait_for(|s| *s) => Close::Stopping,
        };
        let _ = close_tx.send(why);
    });
    // The requests nearly every caller sends are answered without hyper; the first that is not, and the rest of
    // the connection, are hyper's.
    let read = match super::fast::serve(&mut stream, &service, &peer, &watch, &mut close_rx).await {
        super::fast::Next::Close => {
            watcher.abort();
            return;
        }
        super::fast::Next::Hyper(read) => read,
    };
    // Every path goes to `handle`: no router in between (it would only add work per request).
    let w = watch.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let service = service.clone();
        let peer = peer.clone();
        let busy = w.busy();
        async move {
            // The request stays in hand until its reply is written out — a streamed reply included, which may take
            // far longer than the header timeout.
            let resp = handle(&service, &peer, req, busy).await;
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Both bounds: the buffer's for a head still arriving, the head's own for one that arrived whole into a buffer
    // grown larger than the bound (its capacity doubles as it grows; a read may fill all of it).
    builder.keep_alive(true).max_buf_size(CONNECTION_BUFFER).max_header_size(CONNECTION_BUFFER);
    let conn = builder.serve_connection(TokioIo::new(super::fast::Prefixed::new(read, stream)), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        biased; // the connection first: it is what wakes this task nearly every time
        _ = conn.as_mut() => {}
        why = &mut close_rx => {
            if let Ok(Close::Stopping) = why {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            } // idle: dropped, so closed
        }
    }
    watcher.abort();
    drop(open);
}

/// The most a connection buffers: a request's head as it is read, and a streamed reply's chunks queued for the
/// socket. hyper's default is about 400 KB a connection; 64 KB bounds what one slow reader or one oversized head holds
/// (a longer head is refused with 431) and is far above any real request's head.
const CONNECTION_BUFFER: usize = 64 * 1024;

/// Why a connection's watcher asks for it to be closed.
pub(super) enum Close {
    /// No request in hand for the header timeout: closed at once.
    Idle,
    /// The server is shutting down: the request in hand is finished first.
    Stopping,
}

/// The header timeout of one connection, kept without a timer per request: the time its last request was answered
/// (or it was accepted) and whether a request is in hand. With no request in hand for longer than the header
/// timeout — idle between requests, or headers arriving too slowly — the connection is closed. A request in hand
/// has its body timeout instead. One timer per connection, re-armed once per timeout at most.
pub(super) struct IdleWatch {
    origin: tokio::time::Instant,
    /// Milliseconds after `origin` when the last request was answered.
    idle_since_ms: AtomicU64,
    in_hand: AtomicU64,
}

/// A request in hand; dropping it (answered, or abandoned) starts the idle time again.
pub(super) struct InHand(Arc<IdleWatch>);

impl Drop for InHand {
    fn drop(&mut self) {
        let w = &self.0;
        w.idle_since_ms.store(w.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        w.in_hand.fetch_sub(1, Ordering::Relaxed);
    }
}

impl IdleWatch {
    fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            idle_since_ms: AtomicU64::new(0),
            in_hand: AtomicU64::new(0),
        }
    }

    pub(super) fn busy(self: &Arc<Self>) -> InHand {
        self.in_hand.fetch_add(1, Ordering::Relaxed);
        InHand(self.clone())
    }

    /// Resolves once the connection has had no request in hand for `timeout`.
    async fn idle_for(&self, timeout: std::time::Duration) {
        let mut check_at = self.origin + timeout;
        loop {
            tokio::time::sleep_until(check_at).await;
            let now = tokio::time::Instant::now();
            if self.in_hand.load(Ordering::Relaxed) > 0 {
                check_at = now + timeout;
                continue;
            }
            let idle_since =
                self.origin + std::time::Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
            if idle_since + timeout <= now {
                return;
            }
            check_at = idle_since + timeout;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::least_open;

    fn pick(turn: usize, open: &[usize]) -> usize {
        least_open(turn, open.len(), |i| open[i])
    }

    #[test]
    fn a_connection_goes_to_the_lane_with_the_fewest_open_the_next_in_turn_among_equals() {
        assert_eq!(pick(0, &[3, 1, 2]), 1);
        assert_eq!(pick(7, &[0, 5]), 0, "fewest open wins over the turn");
        // Equal lanes take connections in turn.
        let turns: Vec<usize> = (0..4).map(|t| pick(t, &[2, 2, 2])).collect();
        assert_eq!(turns, [0, 1, 2, 0]);
        assert_eq!(pick(5, &[4]), 0, "one lane");
        assert_eq!(pick(3, &[]), 0, "none: the first");
    }
}
