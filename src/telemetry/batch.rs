//! HTTP mode's log writer: request threads append whole lines to one bounded in-memory batch, and one thread writes
//! the batch out every few milliseconds. A request never waits on the output and never wakes the writer per line
//! (only the first line of an empty batch does); a full batch drops the line and counts it.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long the writer gathers lines after the first one of a batch arrives.
pub const GATHER: Duration = Duration::from_millis(10);

struct Batch {
    buf: Vec<u8>,
    lines: usize,
    stop: bool,
}

struct Shared {
    batch: Mutex<Batch>,
    /// Signalled on the first line of an empty batch, when a batch is half full, and on shutdown.
    wake: Condvar,
    dropped: AtomicUsize,
    max_lines: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) {
        let mut b = self.lock();
        if b.lines >= self.max_lines {
            drop(b);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        b.buf.extend_from_slice(line);
        b.lines += 1;
        let signal = b.lines == 1 || b.lines == self.max_lines / 2;
        drop(b);
        if signal {
            self.wake.notify_one();
        }
    }
}

/// The handle the subscriber writes through (cheap to clone).
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Keep until exit: dropping it writes out what is buffered and stops the writer thread.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl BatchWriter {
    /// Start the writer thread over `out`, holding at most `max_lines` lines between two writes.
    pub fn spawn(
        out: impl Write + Send + 'static,
        max_lines: usize,
        thread_name: &str,
    ) -> std::io::Result<(Self, FlushGuard)> {
        let shared = Arc::new(Shared {
            batch: Mutex::new(Batch { buf: Vec::with_capacity(64 * 1024), lines: 0, stop: false }),
            wake: Condvar::new(),
            dropped: AtomicUsize::new(0),
            max_lines: max_lines.max(1),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || write_batches(&worker, out))?;
        Ok((Self { shared: shared.clone() }, FlushGuard { shared, thread: Some(thread) }))
    }

    /// Append one whole line (or drop and count it when the batch is full).
    pub fn push(&self, line: &[u8]) {
        self.shared.push(line);
    }

    /// Lines dropped so far because the batch was full.
    pub fn dropped_lines(&self) -> usize {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        let mut b = shared.lock();
        // Idle: sleep until a line arrives (or shutdown).
        while b.lines == 0 && !b.stop {
            b = shared.wake.wait(b).unwrap_or_else(PoisonError::into_inner);
        }
        // Gather: let more lines join the batch, unless it is already half full or we are stopping.
        if !b.stop && b.lines < shared.max_lines / 2 {
            b = shared.wake.wait_timeout(b, GATHER).unwrap_or_else(PoisonError::into_inner).0;
        }
        std::mem::swap(&mut b.buf, &mut spare);
        b.lines = 0;
        let stop = b.stop;
        drop(b);
        if !spare.is_empty() {
            // Nowhere to report a failed write to: the lines are lost, as with any log output that fails.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
        if stop {
            return;
        }
    }
}

/// One formatted event, appended whole.
pub struct LineWriter<'a>(&'a Shared);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.shared)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// An output the test can read back.
    #[derive(Clone, Default)]
    pub(crate) struct Sink(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_of_every_thread_is_written_whole_by_shutdown() {
        let sink = Sink::default();
        let (w, guard) = BatchWriter::spawn(sink.clone(), 1_000_000, "test-log").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        w.make_writer().write_all(format!("thread {t} line {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..5_000).collect::<Vec<_>>(), "thread {t}'s lines in order, none lost");
        }
        assert_eq!(w.dropped_lines(), 0);
    }

    #[test]
    fn lines_are_written_without_shutdown_and_a_full_batch_drops_and_counts() {
        let sink = Sink::default();
        let (w, _guard) = BatchWriter::spawn(sink.clone(), 1_000_000, "test-log").unwrap();
        w.make_writer().write_all(b"first\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"first\n", "written while the process runs");

        // A writer that never finishes a write: the batch fills up behind it.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        struct Stuck(Arc<(Mutex<bool>, Condvar)>, Sink);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut g = open.lock().unwrap();
                while !*g {
                    g = cv.wait(g).unwrap();
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Sink::default();
        let (w, guard) = BatchWriter::spawn(Stuck(gate.clone(), out.clone()), 10, "test-log").unwrap();
        w.make_writer().write_all(b"stuck\n").unwrap();
        // Wait until the writer has taken that batch and is stuck writing it.
        while w.shared.lock().lines != 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 0..25 {
            w.make_writer().write_all(format!("{i}\n").as_bytes()).unwrap();
        }
        assert_eq!(w.dropped_lines(), 15, "10 held, 15 dropped and counted");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let want: String =
            std::iter::once("stuck\n".to_owned()).chain((0..10).map(|i| format!("{i}\n"))).collect();
        assert_eq!(text, want, "the held lines are written whole, in order");
    }
}
