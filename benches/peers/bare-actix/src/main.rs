//! Raw websocket fan-out baseline on actix-web 4 + actix-ws 0.4 (the hub's own stack),
//! with no auth, no JSON and no storage.
//!
//! - `GET /ws?user=<id>` upgrades to a websocket registered under `user`.
//! - `POST /emit?users=u1,u2` (or `?all=1`) with a raw body: the body, as one shared
//!   `ByteString`, is `try_send`-ed to each target session's bounded queue (dropped when
//!   full); answers 200 with the number of queues reached, as text.
//! - `GET /healthz` -> 200.
//!
//! Port: first argument or `PORT`. One actix worker per available core.

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, get, post, rt, web};
use actix_ws::{Message, MessageStream, Session};
use bytestring::ByteString;
use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Per-session queue capacity; frames beyond it are dropped.
const QUEUE: usize = 256;

type Tx = mpsc::Sender<ByteString>;

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

#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// Extracts `name=value` from a raw query string (no decoding: ids are plain).
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

#[get("/ws")]
async fn ws(req: HttpRequest, body: web::Payload, reg: web::Data<Registry>) -> actix_web::Result<HttpResponse> {
    let Some(user) = param(req.query_string(), "user").map(str::to_owned) else {
        return Ok(HttpResponse::BadRequest().body("user required"));
    };
    let (resp, session, stream) = actix_ws::handle(&req, body)?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let id = reg.add(&user, tx);
    rt::spawn(async move {
        run_session(session, stream, rx).await;
        reg.remove(&user, id);
    });
    Ok(resp)
}

/// Forwards queued frames to the socket and answers pings until either side closes.
async fn run_session(mut session: Session, mut stream: MessageStream, mut rx: mpsc::Receiver<ByteString>) {
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(frame) => if session.text(frame).await.is_err() { return },
                None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Ping(p))) => if session.pong(&p).await.is_err() { return },
                Some(Ok(Message::Close(reason))) => {
                    let _ = session.close(reason).await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    let _ = session.close(None).await;
}

#[post("/emit")]
async fn emit(req: HttpRequest, body: web::Bytes, reg: web::Data<Registry>) -> HttpResponse {
    let Ok(frame) = ByteString::try_from(body) else {
        return HttpResponse::BadRequest().body("body must be utf-8");
    };
    let query = req.query_string();
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
        return HttpResponse::BadRequest().body("users=... or all=1 required");
    }
    HttpResponse::Ok().body(reached.to_string())
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .expect("usage: peer-bare-actix PORT (or env PORT)");
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let reg = web::Data::new(Registry::default());
    rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(reg.clone())
                .app_data(web::PayloadConfig::new(16 << 20))
                .service(healthz)
                .service(ws)
                .service(emit)
        })
        .workers(workers)
        .backlog(4096)
        .bind(("127.0.0.1", port))?
        .run();
        println!("listening on 127.0.0.1:{port}");
        server.await
    })
}
