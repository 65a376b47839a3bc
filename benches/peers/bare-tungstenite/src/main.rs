//! Raw websocket fan-out baseline on tokio + hyper 1 + tokio-tungstenite, with no auth,
//! no JSON and no storage. One port serves HTTP and websockets (hyper upgrade).
//!
//! - `GET /ws?user=<id>` upgrades to a websocket registered under `user`.
//! - `POST /emit?users=u1,u2` (or `?all=1`) with a raw body: the body, as one shared
//!   `Utf8Bytes`, is `try_send`-ed to each target session's bounded queue (dropped when
//!   full); answers 200 with the number of queues reached, as text.
//! - `GET /healthz` -> 200.
//!
//! Each session has a writer task that drains its queue in batches (`feed` everything
//! queued, then one `flush`). Port: first argument or `PORT`. One tokio worker per
//! available core (a single-threaded runtime when pinned to one core).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE},
    server::conn::http1,
    service::service_fn,
    upgrade::Upgraded,
};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message, Utf8Bytes,
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};

/// Per-session queue capacity; frames beyond it are dropped.
const QUEUE: usize = 256;

type Tx = mpsc::Sender<Utf8Bytes>;
type Resp = Response<Full<Bytes>>;

/// Every live session, by user and as a flat list (keyed by session id).
#[derive(Default)]
struct Registry {
    by_user: DashMap<String, Vec<(u64, Tx)>>,
    all: DashMap<u64, Tx>,
    next_id: AtomicU64,
}

impl Registry {
    fn add(&self, user: &str, tx: Tx) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.all.insert(id, tx.clone());
        self.by_user.entry(user.to_owned()).or_default().push((id, tx));
        id
    }

    fn remove(&self, user: &str, id: u64) {
        self.all.remove(&id);
        self.by_user.remove_if_mut(user, |_, v| {
            v.retain(|(i, _)| *i != id);
            v.is_empty()
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    Response::builder().status(status).body(Full::new(body.into())).unwrap()
}

/// Extracts `name=value` from a raw query string (no decoding: ids are plain).
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

async fn handle(req: Request<Incoming>, reg: Arc<Registry>) -> Result<Resp, hyper::Error> {
    let query = req.uri().query().unwrap_or("");
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/ws") => upgrade(req, reg),
        (&Method::POST, "/emit") => {
            let query = query.to_owned();
            let body = req.into_body().collect().await?.to_bytes();
            emit(&reg, &query, body)
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    })
}

fn emit(reg: &Registry, query: &str, body: Bytes) -> Resp {
    let Ok(frame) = Utf8Bytes::try_from(body) else {
        return text(StatusCode::BAD_REQUEST, "body must be utf-8");
    };
    let mut reached = 0usize;
    let mut send = |tx: &Tx| {
        if tx.try_send(frame.clone()).is_ok() {
            reached += 1;
        }
    };
    if param(query, "all") == Some("1") {
        reg.all.iter().for_each(|e| send(e.value()));
    } else if let Some(users) = param(query, "users") {
        for user in users.split(',') {
            if let Some(sessions) = reg.by_user.get(user) {
                sessions.iter().for_each(|(_, tx)| send(tx));
            }
        }
    } else {
        return text(StatusCode::BAD_REQUEST, "users=... or all=1 required");
    }
    text(StatusCode::OK, reached.to_string())
}

/// Answers the websocket handshake with 101 and runs the session once hyper hands over the
/// upgraded connection.
fn upgrade(mut req: Request<Incoming>, reg: Arc<Registry>) -> Resp {
    let Some(user) = param(req.uri().query().unwrap_or(""), "user").map(str::to_owned) else {
        return text(StatusCode::BAD_REQUEST, "user required");
    };
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "not a websocket upgrade");
    };
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(&mut req).await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await;
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = reg.add(&user, tx);
        run_session(ws, rx).await;
        reg.remove(&user, id);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::default())
        .unwrap()
}

/// tungstenite's default 128 KiB read buffer is zero-filled per connection (~128 KiB RSS
/// each); clients here only send pongs/close, so use 4 KiB like engineioxide's default.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// Reads until the client goes away (tungstenite answers pings and close by itself) while a
/// writer task forwards queued frames in batches.
async fn run_session(ws: WebSocketStream<TokioIo<Upgraded>>, mut rx: mpsc::Receiver<Utf8Bytes>) {
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            sink.feed(Message::Text(frame)).await?;
            while let Ok(frame) = rx.try_recv() {
                sink.feed(Message::Text(frame)).await?;
            }
            sink.flush().await?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    });
    while let Some(Ok(_)) = stream.next().await {}
    writer.abort();
}

async fn serve(port: u16) -> std::io::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    let listener = socket.listen(4096)?;
    println!("listening on 127.0.0.1:{port}");
    let reg = Arc::new(Registry::default());
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let reg = reg.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, reg.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .expect("usage: peer-bare-tungstenite PORT (or env PORT)");
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    rt.block_on(serve(port))
}
