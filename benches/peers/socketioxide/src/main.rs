//! Socket.IO peer on socketioxide (Rust): the Rust counterpart of `../socketio/server.js`.
//!
//! - Socket.IO (Engine.IO v4) at `/socket.io/`, websocket transport only. The connect auth
//!   payload `{"user": "<id>", "location": "<loc>"}` joins rooms `user:<id>` and `loc:<loc>`.
//! - `POST /emit` `{"rooms": [...], "event": "...", "data": <any>}` ->
//!   `io.to(rooms).emit(event, &data)`, answers `{"ok":true}`.
//! - `GET /healthz` -> 200.
//!
//! With `REDIS_URL` set, rooms span processes through `socketioxide-redis` (RESP3 pub/sub);
//! otherwise the default in-memory adapter is used. Port: first argument or `PORT`.

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, header::CONTENT_TYPE},
    response::IntoResponse,
    routing::{get, post},
    serve::ListenerExt,
};
use serde::Deserialize;
use serde_json::Value;
use socketioxide::{
    SocketIo, TransportType,
    adapter::Adapter,
    extract::{Data, SocketRef},
    layer::SocketIoLayer,
};
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr, drivers::redis::redis_client as redis};

/// Connect-time auth payload sent by clients (`40{"user":..,"location":..}`).
#[derive(Deserialize)]
struct Auth {
    user: String,
    location: Option<String>,
}

/// Body of `POST /emit`.
#[derive(Deserialize)]
struct Emit {
    rooms: Vec<String>,
    event: String,
    data: Value,
}

async fn on_connect<A: Adapter>(socket: SocketRef<A>, Data(auth): Data<Auth>) {
    let mut rooms = vec![format!("user:{}", auth.user)];
    if let Some(loc) = auth.location {
        rooms.push(format!("loc:{loc}"));
    }
    socket.join(rooms);
}

/// `POST /emit`; the body is parsed as JSON whatever its content type (like the Node peer).
async fn emit<A: Adapter>(State(io): State<SocketIo<A>>, body: Bytes) -> impl IntoResponse {
    let json = |status, body| (status, [(CONTENT_TYPE, "application/json")], body);
    let Ok(req) = serde_json::from_slice::<Emit>(&body) else {
        return json(StatusCode::BAD_REQUEST, r#"{"error":"bad json"}"#);
    };
    match io.to(req.rooms).emit(&req.event, &req.data).await {
        Ok(()) => json(StatusCode::OK, r#"{"ok":true}"#),
        Err(_) => json(StatusCode::INTERNAL_SERVER_ERROR, r#"{"ok":false}"#),
    }
}

/// Serves the HTTP routes and the Socket.IO layer on `port` until the process is killed.
async fn serve<A: Adapter>(port: u16, layer: SocketIoLayer<A>, io: SocketIo<A>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/emit", post(emit::<A>))
        .with_state(io)
        .layer(layer);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(([127, 0, 0, 1], port).into()).expect("bind");
    let listener = socket.listen(4096).expect("listen").tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!("listening on 127.0.0.1:{port}");
    axum::serve(listener, app).await.expect("serve");
}

async fn run(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let builder = SocketIo::builder().transports([TransportType::Websocket]);
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            // The redis driver needs RESP3 (push messages for pub/sub).
            let sep = if url.contains('?') { '&' } else { '?' };
            let client = redis::Client::open(format!("{url}{sep}protocol=resp3"))?;
            let adapter = RedisAdapterCtr::new_with_redis(&client).await?;
            let (layer, io) = builder.with_adapter::<RedisAdapter<_>>(adapter).build_layer();
            io.ns("/", on_connect).await?;
            serve(port, layer, io).await;
        }
        _ => {
            let (layer, io) = builder.build_layer();
            io.ns("/", on_connect);
            serve(port, layer, io).await;
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .expect("usage: peer-socketioxide PORT (or env PORT)")
        .parse()?;
    // One worker per available core; a single-threaded runtime when pinned to one core.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    rt.block_on(run(port))
}
