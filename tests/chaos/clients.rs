//! Websocket clients as an app would run them: connect to any running node, and after any
//! loss (a close, an error, a node that went silent, a connection the monkey dropped)
//! reconnect to any running node resuming in the handshake from the newest event id seen
//! (`?last_event_id=`); on `resync`, reload over REST (the user's threads, their messages and
//! `/me`). Every connection's frames are recorded for the checker.
//!
//! A client pings every second and gives a connection up after `SILENCE` without any frame
//! (a frozen node answers nothing, not even a close).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message as WsMessage, protocol::CloseFrame},
};

use crate::{
    rig::{Rig, member},
    rng::Rng,
};

/// The sessions: sam on two devices, sue, olga and nick on one each.
const SESSIONS: [&str; 5] = ["sam", "sam", "sue", "olga", "nick"];
const SILENCE: Duration = Duration::from_secs(4);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// One event frame as a client received it.
pub struct Seen {
    pub id: u64,
    pub kind: String,
    /// For `message.new`: the message's `external_id` and id.
    pub external_id: Option<String>,
    pub message_id: Option<String>,
    pub at: Instant,
}

/// One websocket connection of a client.
pub struct Conn {
    pub port: u16,
    pub opened: Instant,
    /// When the handshake was sent (`opened` is when it was answered).
    pub dialed: Instant,
    pub closed: Option<Instant>,
    /// The `last_event_id` of the handshake.
    pub resumed_from: Option<u64>,
    pub resync: bool,
    pub events: Vec<Seen>,
    pub ended: String,
}

/// A client's whole history across reconnects.
pub struct Client {
    pub name: String,
    pub user: &'static str,
    pub conns: Vec<Conn>,
    /// `external_id`s of the messages a REST reload (after `resync`) found.
    pub reloaded: HashSet<String>,
    /// The unread count as the client knows it (hello, then `unread.count`, or `/me` after a
    /// reload).
    pub count: Option<i64>,
    pub failed_handshakes: u32,
    pub dropped: u32,
}

type Shared = Arc<Mutex<Client>>;

pub struct Sessions {
    clients: Vec<Shared>,
    droppers: Vec<Arc<Notify>>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Sessions {
    /// Starts every client and waits until each has said hello once.
    pub async fn new(rig: Arc<Rig>, seed: u64) -> Sessions {
        let (stop, stopped) = watch::channel(false);
        let mut sessions = Sessions {
            clients: Vec::new(),
            droppers: Vec::new(),
            tasks: Vec::new(),
            stop,
        };
        for (i, user) in SESSIONS.iter().enumerate() {
            let name = format!("{user}#{i}");
            let client = Arc::new(Mutex::new(Client {
                name: name.clone(),
                user,
                conns: Vec::new(),
                reloaded: HashSet::new(),
                count: None,
                failed_handshakes: 0,
                dropped: 0,
            }));
            let dropper = Arc::new(Notify::new());
            sessions.tasks.push(tokio::spawn(run(
                rig.clone(),
                client.clone(),
                Rng::new(seed, &name),
                stopped.clone(),
                dropper.clone(),
            )));
            sessions.clients.push(client);
            sessions.droppers.push(dropper);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while sessions.clients.iter().any(|c| c.lock().unwrap().count.is_none()) {
            assert!(Instant::now() < deadline, "every client says hello within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sessions
    }

    pub fn clients(&self) -> &[Shared] {
        &self.clients
    }

    /// What the monkey uses to drop a client's connection.
    pub fn droppers(&self) -> Vec<Arc<Notify>> {
        self.droppers.clone()
    }

    /// Stops every client and hands back the histories.
    pub async fn finish(self) -> Vec<Client> {
        self.stop.send(true).unwrap();
        for t in self.tasks {
            t.await.expect("a client task");
        }
        self.clients
            .into_iter()
            .map(|c| {
                Arc::try_unwrap(c)
                    .unwrap_or_else(|_| panic!("client still shared"))
                    .into_inner()
                    .unwrap()
            })
            .collect()
    }
}

type Stream = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn run(rig: Arc<Rig>, client: Shared, mut rng: Rng, mut stop: watch::Receiver<bool>, dropper: Arc<Notify>) {
    let user = client.lock().unwrap().user;
    let token = member(user);
    let mut last: Option<u64> = None;
    while !*stop.borrow() {
        let ports = rig.live_ports();
        if ports.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let port = rng.pick(&ports);
        let mut url = format!("ws://127.0.0.1:{port}/ws?access_token={token}");
        if let Some(l) = last {
            url.push_str(&format!("&last_event_id={l}"));
        }
        let dialed = Instant::now();
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect_async(url)).await {
            Ok(Ok((stream, _))) => stream,
            _ => {
                client.lock().unwrap().failed_handshakes += 1;
                tokio::time::sleep(rng.millis(50, 300)).await;
                continue;
            }
        };
        client.lock().unwrap().conns.push(Conn {
            port,
            opened: Instant::now(),
            dialed,
            closed: None,
            resumed_from: last,
            resync: false,
            events: Vec::new(),
            ended: String::new(),
        });
        let ended = connection(&rig, &client, &token, stream, &mut last, &mut stop, &dropper).await;
        {
            let mut c = client.lock().unwrap();
            let conn = c.conns.last_mut().unwrap();
            conn.ended = ended;
            conn.closed = Some(Instant::now());
        }
        tokio::time::sleep(rng.millis(20, 200)).await;
    }
}

/// Reads one connection until it ends; returns why it ended.
async fn connection(
    rig: &Rig,
    client: &Shared,
    token: &str,
    mut stream: Stream,
    last: &mut Option<u64>,
    stop: &mut watch::Receiver<bool>,
    dropper: &Notify,
) -> String {
    let mut heard = Instant::now();
    let mut head: Option<u64> = None;
    let mut ping = tokio::time::interval(Duration::from_secs(1));
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => {
                let _ = stream.close(Some(CloseFrame { code: 1000.into(), reason: "".into() })).await;
                return "stopped".into();
            }
            () = dropper.notified() => {
                client.lock().unwrap().dropped += 1;
                // Dropped without a close handshake, as a network loss would.
                return "dropped by the monkey".into();
            }
            _ = ping.tick() => {
                if heard.elapsed() > SILENCE {
                    return "silent".into();
                }
                let _ = stream.send(WsMessage::Text(json!({"type": "ping"}).to_string().into())).await;
                continue;
            }
            frame = stream.next() => frame,
        };
        heard = Instant::now();
        let text = match frame {
            Some(Ok(WsMessage::Text(t))) => t,
            Some(Ok(WsMessage::Close(f))) => return format!("closed {:?}", f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return format!("error: {e}"),
            None => return "ended".into(),
        };
        let v: Value = serde_json::from_str(&text).expect("frames are JSON");
        let kind = v["type"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "hello" => {
                let h = parse_id(&v["last_event_id"]);
                head = Some(h);
                last.get_or_insert(h);
                client.lock().unwrap().count = v["unread_count"].as_i64();
            }
            "resync" => {
                client.lock().unwrap().conns.last_mut().unwrap().resync = true;
                // Live events continue after the head this session opened at.
                *last = head.max(*last);
                let (found, count) = reload(rig, token).await;
                let mut c = client.lock().unwrap();
                c.reloaded.extend(found);
                c.count = Some(count);
                // The reload took its time; the connection was not silent meanwhile.
                heard = Instant::now();
            }
            "pong" | "resumed" => {}
            _ if v.get("id").is_some() => {
                let id = parse_id(&v["id"]);
                *last = Some(last.map_or(id, |l| l.max(id)));
                let mut c = client.lock().unwrap();
                if kind == "unread.count" {
                    c.count = v["data"]["count"].as_i64();
                }
                let message = &v["data"]["message"];
                let is_new = kind == "message.new";
                c.conns.last_mut().unwrap().events.push(Seen {
                    id,
                    external_id: is_new.then(|| message["external_id"].as_str().unwrap_or_default().to_owned()),
                    message_id: is_new.then(|| message["id"].as_str().unwrap_or_default().to_owned()),
                    kind,
                    at: heard,
                });
            }
            _ => panic!("{}: an unexpected frame {v}", client.lock().unwrap().name),
        }
    }
}

fn parse_id(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("event ids are numbers in strings: {v}"))
}

/// After `resync`: the `external_id`s of every message in the user's threads, and `/me`'s
/// unread count, from any running node (retried until one answers in full).
async fn reload(rig: &Rig, token: &str) -> (HashSet<String>, i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ports = rig.live_ports();
        if let Some(&port) = ports.first() {
            if let Some(found) = reload_from(rig, port, token).await {
                return found;
            }
        }
        assert!(Instant::now() < deadline, "a reload over REST within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn reload_from(rig: &Rig, port: u16, token: &str) -> Option<(HashSet<String>, i64)> {
    let mut found = HashSet::new();
    for thread in pages(rig, port, token, "/api/v1/threads?view=mine&limit=100", "threads").await? {
        let path = format!("/api/v1/threads/{}/messages?limit=100", thread["id"].as_str()?);
        for m in pages(rig, port, token, &path, "messages").await? {
            if let Some(e) = m["external_id"].as_str() {
                found.insert(e.to_owned());
            }
        }
    }
    let (status, me) = rig
        .call(Method::GET, port, "/api/v1/me", Some(token), None)
        .await
        .ok()?;
    (status == 200).then_some(())?;
    Some((found, me["unread_count"].as_i64()?))
}

/// Every item of a paged list (`{key: [...], "next"}`), or `None` if a page failed.
pub async fn pages(rig: &Rig, port: u16, token: &str, first: &str, key: &str) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let mut path = first.to_owned();
    loop {
        let (status, page) = rig.call(Method::GET, port, &path, Some(token), None).await.ok()?;
        if status != 200 {
            return None;
        }
        out.extend(page[key].as_array()?.iter().cloned());
        match page["next"].as_str() {
            Some(next) => path = format!("{first}&before={next}"),
            None => return Some(out),
        }
    }
}
