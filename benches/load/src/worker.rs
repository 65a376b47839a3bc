//! A worker process: holds a share of the websocket clients, timestamps every marked frame it
//! receives, and answers the coordinator over stdin/stdout (one JSON line per message).
//!
//! Clients are spread over several worker processes so that no process passes the open-file
//! limit, and over several 127.0.0.x source addresses so that no pair of addresses runs out
//! of ephemeral ports.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::{
    Histogram,
    serialization::{Deserializer, Serializer, V2Serializer},
};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpSocket,
    sync::{Semaphore, mpsc},
    task::JoinSet,
};
use tokio_tungstenite::{client_async, tungstenite::Message};

use crate::proc::now_ns;

/// How a system's clients speak after the websocket handshake.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Proto {
    /// Switchboard: the token is in the URL; the session is open at the `hello` frame.
    Switchboard,
    /// Engine.IO v4 / Socket.IO v5 packets: open `0{..}`, CONNECT `40{auth}`, events
    /// `42[..]`, server ping `2` answered with pong `3`.
    SocketIo,
    /// No protocol: every text frame is a message.
    Bare,
}

/// One client to open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    /// Path and query of the websocket URL.
    pub path: String,
    /// Socket.IO CONNECT payload (JSON), if any.
    pub auth: Option<String>,
}

/// Coordinator to worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum Cmd {
    Connect {
        proto: Proto,
        /// The server, e.g. `127.0.0.1:9000`.
        server: String,
        clients: Vec<Client>,
        /// Local addresses to connect from, used in turn.
        sources: Vec<String>,
        /// Handshakes in flight at once.
        parallel: usize,
        /// Broadcast mode: say `Done` when every client of this worker has a message.
        report_done: bool,
    },
    /// Zero the counters and the histogram.
    Reset,
    Report,
    Close,
}

/// Worker to coordinator.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Connected {
        ok: usize,
        failed: usize,
        first_error: Option<String>,
    },
    /// Every client of this worker has message `seq`; the last got it at `last_ns`.
    Done {
        seq: u64,
        last_ns: u64,
    },
    Report(Report),
    Ok,
}

/// What a worker saw since the last `Reset`.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct Report {
    /// Text frames received (every kind).
    pub frames: u64,
    /// Frames carrying a load marker (one per message delivery).
    pub marked: u64,
    /// Clients whose connection ended.
    pub closed: u64,
    /// Latency histogram in microseconds, V2-serialised, base64.
    pub hist: String,
}

impl Report {
    pub fn histogram(&self) -> Result<Histogram<u64>> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(&self.hist)?;
        Ok(Deserializer::new().deserialize(&mut bytes.as_slice())?)
    }
}

/// A latency histogram in microseconds, up to one minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// The marker a load message carries: `lt:<seq>:<sent_ns>`.
pub fn marker(seq: u64, sent_ns: u64) -> String {
    format!("lt:{seq}:{sent_ns}")
}

/// Finds `lt:<seq>:<sent_ns>` in a frame.
pub fn parse_marker(text: &str) -> Option<(u64, u64)> {
    let at = text.find("lt:")? + 3;
    let rest = &text[at..];
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let n = digits(rest);
    let seq = rest[..n].parse().ok()?;
    let rest = rest[n..].strip_prefix(':')?;
    let m = digits(rest);
    let sent = rest[..m].parse().ok()?;
    Some((seq, sent))
}

#[derive(Default)]
struct Seen {
    count: u32,
    last_ns: u64,
}

struct Shared {
    frames: AtomicU64,
    marked: AtomicU64,
    closed: AtomicU64,
    hist: Mutex<Histogram<u64>>,
    /// Broadcast mode: per message, how many clients have it.
    seen: Mutex<HashMap<u64, Seen>>,
    report_done: bool,
    clients: AtomicU64,
    out: mpsc::UnboundedSender<Reply>,
}

impl Shared {
    fn on_text(&self, text: &str) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        let Some((seq, sent)) = parse_marker(text) else {
            return;
        };
        let now = now_ns();
        self.marked.fetch_add(1, Ordering::Relaxed);
        let us = (now.saturating_sub(sent) / 1000).max(1);
        let _ = self.hist.lock().unwrap().record(us.min(60_000_000));
        if self.report_done {
            let mut seen = self.seen.lock().unwrap();
            let s = seen.entry(seq).or_default();
            s.count += 1;
            s.last_ns = s.last_ns.max(now);
            if u64::from(s.count) == self.clients.load(Ordering::Relaxed) {
                let last_ns = s.last_ns;
                seen.remove(&seq);
                let _ = self.out.send(Reply::Done { seq, last_ns });
            }
        }
    }

    fn report(&self) -> Report {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&self.hist.lock().unwrap(), &mut bytes)
            .expect("serialise histogram");
        Report {
            frames: self.frames.load(Ordering::Relaxed),
            marked: self.marked.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            hist: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    fn reset(&self) {
        self.frames.store(0, Ordering::Relaxed);
        self.marked.store(0, Ordering::Relaxed);
        self.hist.lock().unwrap().reset();
        self.seen.lock().unwrap().clear();
    }
}

/// Runs a worker until `Close` or end of input.
pub async fn run() -> Result<()> {
    let (out, mut replies) = mpsc::unbounded_channel::<Reply>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(r) = replies.recv().await {
            let mut line = serde_json::to_vec(&r).expect("reply");
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut shared: Option<Arc<Shared>> = None;
    // The clients' tasks: each holds a sender of `out`, so they end before the writer can.
    let mut tasks = JoinSet::new();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Cmd>(&line).context("command")? {
            Cmd::Connect {
                proto,
                server,
                clients,
                sources,
                parallel,
                report_done,
            } => {
                let s = Arc::new(Shared {
                    frames: AtomicU64::new(0),
                    marked: AtomicU64::new(0),
                    closed: AtomicU64::new(0),
                    hist: Mutex::new(histogram()),
                    seen: Mutex::new(HashMap::new()),
                    report_done,
                    clients: AtomicU64::new(0),
                    out: out.clone(),
                });
                shared = Some(s.clone());
                let reply = connect_all(&mut tasks, s, proto, &server, clients, &sources, parallel).await?;
                out.send(reply)?;
            }
            Cmd::Reset => {
                if let Some(s) = &shared {
                    s.reset();
                }
                out.send(Reply::Ok)?;
            }
            Cmd::Report => {
                let r = shared.as_ref().map(|s| s.report()).unwrap_or_default();
                out.send(Reply::Report(r))?;
            }
            Cmd::Close => break,
        }
    }
    tasks.shutdown().await;
    drop(shared);
    drop(out);
    let _ = writer.await;
    Ok(())
}

/// Opens every client (at most `parallel` handshakes at once) and leaves them reading.
async fn connect_all(
    tasks: &mut JoinSet<()>,
    shared: Arc<Shared>,
    proto: Proto,
    server: &str,
    clients: Vec<Client>,
    sources: &[String],
    parallel: usize,
) -> Result<Reply> {
    let server: SocketAddr = server.parse().context("server address")?;
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let n = clients.len();
    for (i, client) in clients.into_iter().enumerate() {
        let source: SocketAddr = format!("{}:0", sources[i % sources.len()]).parse()?;
        let permit = gate.clone().acquire_owned().await?;
        let (shared, ready) = (shared.clone(), ready_tx.clone());
        tasks.spawn(async move {
            let opened = tokio::time::timeout(HANDSHAKE_TIMEOUT, open(proto, source, server, &client)).await;
            let ws = match opened.unwrap_or_else(|_| Err(anyhow::anyhow!("no session within {HANDSHAKE_TIMEOUT:?}"))) {
                Ok(ws) => ws,
                Err(e) => {
                    drop(permit);
                    let _ = ready.send(Err(format!("{e:#}")));
                    return;
                }
            };
            drop(permit);
            shared.clients.fetch_add(1, Ordering::Relaxed);
            let _ = ready.send(Ok(()));
            listen(ws, proto, &shared).await;
            shared.closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    let (mut ok, mut failed, mut first_error) = (0, 0, None);
    for _ in 0..n {
        match ready_rx.recv().await {
            Some(Ok(())) => ok += 1,
            Some(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            None => break,
        }
    }
    Ok(Reply::Connected {
        ok,
        failed,
        first_error,
    })
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// How long one client may take from TCP connect to an open session.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connects one client and waits until its session is open.
async fn open(proto: Proto, source: SocketAddr, server: SocketAddr, client: &Client) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(source)?;
    let tcp = socket.connect(server).await?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{server}{}", client.path);
    let (mut ws, _) = client_async(url, tcp).await?;
    match proto {
        Proto::Bare => {}
        Proto::Switchboard => {
            let first = next_text(&mut ws).await?;
            if !first.contains("\"hello\"") {
                bail!("expected hello, got {first}");
            }
        }
        Proto::SocketIo => {
            let open = next_text(&mut ws).await?;
            if !open.starts_with('0') {
                bail!("expected the Engine.IO open packet, got {open}");
            }
            let connect = format!("40{}", client.auth.as_deref().unwrap_or(""));
            ws.send(Message::text(connect)).await?;
            loop {
                let t = next_text(&mut ws).await?;
                if t == "2" {
                    ws.send(Message::text("3")).await?;
                } else if t.starts_with("40") {
                    break;
                } else if t.starts_with("44") {
                    bail!("connect refused: {t}");
                }
            }
        }
    }
    Ok(ws)
}

async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await.context("closed during the handshake")?? {
            Message::Text(t) => return Ok(t.as_str().to_owned()),
            Message::Close(c) => bail!("closed during the handshake: {c:?}"),
            _ => {}
        }
    }
}

/// Reads frames until the connection ends; answers Socket.IO pings.
async fn listen(mut ws: Ws, proto: Proto, shared: &Shared) {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) => {
                if proto == Proto::SocketIo && t.as_str() == "2" {
                    if ws.send(Message::text("3")).await.is_err() {
                        break;
                    }
                    continue;
                }
                shared.on_text(t.as_str());
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_inside_any_frame() {
        let m = marker(42, 1_234_567_890);
        let frame = format!(r#"{{"type":"message.new","data":{{"body":"{m} padding"}}}}"#);
        assert_eq!(parse_marker(&frame), Some((42, 1_234_567_890)));
        assert_eq!(parse_marker(r#"42["event",{"b":"lt:7:99"}]"#), Some((7, 99)));
        assert_eq!(parse_marker("no marker"), None);
        assert_eq!(parse_marker("lt:x:1"), None);
    }
}
