//! A local emulator of the SCF custom-runtime API, faithful to what matters (the SCF custom-runtime API as `docs/scf-runtime.md` describes it): underscore
//! headers on `next`, a repeated `next` during an open invocation returns the same event, the first result pushed
//! is final. A [`Supervisor`] runs a real `bootstrap` as a child exactly as SCF does, and enforces the init timeout
//! and the execution time limit by killing and restarting it. Used by the tests, `wafer-scf replay` and benchmarks.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Posted to `/runtime/invocation/response`.
    Response(Vec<u8>),
    /// Posted to `/runtime/invocation/error`.
    Error(String),
    /// Nothing was posted within the time limit.
    Timeout,
}

/// The largest result the emulated runtime API accepts, as SCF does for a synchronous invocation.
pub const RESULT_LIMIT: usize = 6 * 1024 * 1024;

struct Pending {
    request_id: String,
    event: Vec<u8>,
    reply: oneshot::Sender<Outcome>,
}

struct Open {
    request_id: String,
    event: Vec<u8>,
    reply: Option<oneshot::Sender<Outcome>>,
}

struct EmuState {
    queue: Mutex<VecDeque<Pending>>,
    open: Mutex<Option<Open>>,
    queued: Notify,
    ready: Notify,
    ready_at: Mutex<Vec<Instant>>,
    time_limit_ms: u64,
    memory_limit_mb: u64,
    late_results: Mutex<u64>,
    failing_polls: Mutex<u32>,
}

/// The emulated runtime API server.
#[derive(Clone)]
pub struct Emulator {
    state: Arc<EmuState>,
    addr: SocketAddr,
    seq: Arc<Mutex<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Emulator {
    /// Start on an ephemeral loopback port.
    pub async fn start(time_limit_ms: u64) -> std::io::Result<Self> {
        let state = Arc::new(EmuState {
            queue: Mutex::new(VecDeque::new()),
            open: Mutex::new(None),
            queued: Notify::new(),
            ready: Notify::new(),
            ready_at: Mutex::new(Vec::new()),
            time_limit_ms,
            memory_limit_mb: 128,
            late_results: Mutex::new(0),
            failing_polls: Mutex::new(0),
        });
        let app = Router::new()
            .route("/runtime/init/ready", post(ready))
            .route("/runtime/invocation/next", get(next))
            .route("/runtime/invocation/response", post(response))
            .route("/runtime/invocation/error", post(error))
            // SCF takes a synchronous result of up to 6 MB (axum's default stops at 2 MB).
            .layer(axum::extract::DefaultBodyLimit::max(RESULT_LIMIT))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, addr, seq: Arc::new(Mutex::new(0)) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`, for in-process runtime clients.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many `init/ready` calls arrived so far, and when.
    pub fn ready_times(&self) -> Vec<Instant> {
        lock(&self.state.ready_at).clone()
    }

    /// Results posted after an invocation was already answered (they are ignored).
    pub fn late_results(&self) -> u64 {
        *lock(&self.state.late_results)
    }

    /// Answer the next `n` calls to `next` with HTTP 500 (a flaky runtime API).
    pub fn fail_next_polls(&self, n: u32) {
        *lock(&self.state.failing_polls) = n;
    }

    /// Wait until at least `count` `init/ready` calls arrived, or `timeout` passes.
    pub async fn wait_ready(&self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.ready.notified();
            if lock(&self.state.ready_at).len() >= count {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return lock(&self.state.ready_at).len() >= count;
            }
        }
    }

    /// Deliver one event and wait for its result (at most the time limit).
    pub async fn invoke(&self, event: Vec<u8>) -> Outcome {
        let request_id = {
            let mut s = lock(&self.seq);
            *s += 1;
            format!("emu-{:08}", *s)
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.state.queue).push_back(Pending { request_id: request_id.clone(), event, reply: tx });
        self.state.queued.notify_waiters();
        self.state.queued.notify_one();
        match tokio::time::timeout(Duration::from_millis(self.state.time_limit_ms), rx).await {
            Ok(Ok(outcome)) => outcome,
            _ => {
                // Timed out: the invocation is closed; whatever the instance posts later is ignored.
                let mut open = lock(&self.state.open);
                if open.as_ref().is_some_and(|o| o.request_id == request_id) {
                    *open = None;
                }
                lock(&self.state.queue).retain(|p| p.request_id != request_id);
                Outcome::Timeout
            }
        }
    }
}

async fn ready(State(st): State<Arc<EmuState>>, body: Bytes) -> Response {
    if body.is_empty() {
        return (StatusCode::BAD_REQUEST, "empty body").into_response();
    }
    lock(&st.ready_at).push(Instant::now());
    st.ready.notify_waiters();
    StatusCode::OK.into_response()
}

fn event_response(st: &EmuState, request_id: &str, event: &[u8]) -> Response {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("request_id", v);
    }
    h.insert("memory_limit_in_mb", HeaderValue::from(st.memory_limit_mb));
    h.insert("time_limit_in_ms", HeaderValue::from(st.time_limit_ms));
    (StatusCode::OK, h, event.to_vec()).into_response()
}

async fn next(State(st): State<Arc<EmuState>>) -> Response {
    {
        let mut failing = lock(&st.failing_polls);
        if *failing > 0 {
            *failing -= 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, "runtime API unavailable").into_response();
        }
    }
    loop {
        let notified = st.queued.notified();
        {
            let mut open = lock(&st.open);
            if let Some(o) = open.as_ref() {
                // A repeated `next` during an open invocation returns the same event.
                return event_response(&st, &o.request_id, &o.event);
            }
            if let Some(p) = lock(&st.queue).pop_front() {
                let resp = event_response(&st, &p.request_id, &p.event);
                *open = Some(Open { request_id: p.request_id, event: p.event, reply: Some(p.reply) });
                return resp;
            }
        }
        notified.await;
    }
}

fn finish(st: &EmuState, outcome: Outcome) -> Response {
    let taken = lock(&st.open).take();
    match taken {
        Some(mut o) => {
            if let Some(tx) = o.reply.take() {
                let _ = tx.send(outcome);
            }
        }
        None => *lock(&st.late_results) += 1,
    }
    StatusCode::OK.into_response()
}

async fn response(State(st): State<Arc<EmuState>>, body: Bytes) -> Response {
    finish(&st, Outcome::Response(body.to_vec()))
}

async fn error(State(st): State<Arc<EmuState>>, body: Bytes) -> Response {
    finish(&st, Outcome::Error(String::from_utf8_lossy(&body).into_owned()))
}

/// Runs a `bootstrap` executable as SCF would: environment set, init timeout enforced, killed and restarted when an
/// invocation exceeds the time limit or the process dies.
pub struct Supervisor {
    pub emulator: Emulator,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    init_timeout: Duration,
    child: Option<Child>,
    /// Time from exec to `init/ready` of each start.
    pub cold_starts: Vec<Duration>,
    pub restarts: u32,
    output: Output,
}

/// Where a supervised child's stdout and stderr go.
enum Output {
    /// This process's own.
    Inherit,
    /// Nowhere.
    Null,
    /// stderr appended to a file, stdout nowhere.
    Log(PathBuf),
}

impl Supervisor {
    pub fn new(emulator: Emulator, program: PathBuf, init_timeout: Duration) -> Self {
        Self {
            emulator,
            program,
            args: Vec::new(),
            env: Vec::new(),
            init_timeout,
            child: None,
            cold_starts: Vec::new(),
            restarts: 0,
            output: Output::Inherit,
        }
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Send the child's stdout/stderr to /dev/null.
    pub fn quiet(mut self) -> Self {
        self.output = Output::Null;
        self
    }

    /// Append the child's stderr (its log) to `path`, as SCF hands it to its log collector; stdout is dropped.
    pub fn log_to(mut self, path: &std::path::Path) -> Self {
        self.output = Output::Log(path.to_owned());
        self
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Start the child and wait for its `init/ready`. Returns the cold-start time.
    pub async fn start(&mut self) -> std::io::Result<Duration> {
        let before = self.emulator.ready_times().len();
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env("SCF_RUNTIME_API", "127.0.0.1")
            .env("SCF_RUNTIME_API_PORT", self.emulator.addr().port().to_string())
            .env("_HANDLER", "wafer")
            .env("SCF_FUNCTIONNAME", "wafer-scf-local")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        match &self.output {
            Output::Inherit => {}
            Output::Null => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
            Output::Log(path) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                cmd.stdout(Stdio::null()).stderr(file);
            }
        }
        let started = Instant::now();
        self.child = Some(cmd.spawn()?);
        if !self.emulator.wait_ready(before + 1, self.init_timeout).await {
            self.kill();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "bootstrap did not call init/ready within the init timeout",
            ));
        }
        let ready_at = self.emulator.ready_times().get(before).copied().unwrap_or_else(Instant::now);
        let cold = ready_at.saturating_duration_since(started);
        self.cold_starts.push(cold);
        Ok(cold)
    }

    /// Kill the child (SIGKILL), as SCF does on a timeout.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Deliver an event. A timeout or a dead child recycles the instance, as SCF does.
    pub async fn invoke(&mut self, event: Vec<u8>) -> std::io::Result<Outcome> {
        let dead = self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
        if dead {
            self.kill();
            self.restarts += 1;
            self.start().await?;
        }
        let outcome = self.emulator.invoke(event).await;
        if outcome == Outcome::Timeout {
            self.kill();
            self.restarts += 1;
            self.start().await?;
        }
        Ok(outcome)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.kill();
    }
}
