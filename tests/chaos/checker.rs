//! After the faults: wait for the cluster to converge, then check the whole history and print
//! the figures.
//!
//! Converged means: every client has every acknowledged message of its audience (live, by a
//! replay, or from a REST reload after `resync`), and for every user `/me`'s unread count, the
//! sum of `unread_count` over their thread list and the count each of their sessions holds
//! are one number.
//!
//! The rules over the history (`check`):
//! - every acknowledged message reached every session of its audience exactly once after
//!   de-duplication by event id (one event id per message per session; never two messages
//!   for one `external_id`, and the message id is the acknowledged one);
//! - event ids increase strictly on every connection, and a resumed connection delivers only
//!   ids after the one it resumed from;
//! - no phantom: no `message.new` for an `external_id` never posted, none to a user outside
//!   the message's audience.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use reqwest::Method;

use crate::{
    clients::{Client, Sessions, pages},
    faults::Faults,
    rig::{CUSTOMERS, Rig, USERS, in_audience, member},
    traffic::Posted,
};

/// How long the cluster may take to converge once the faults and the traffic have stopped.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);

/// Waits until the cluster has converged; returns how long it took, or what is still wrong.
pub async fn converge(rig: &Rig, sessions: &Sessions, posted: &[Posted]) -> Result<Duration, String> {
    let t = Instant::now();
    loop {
        let problem = match missing(sessions, posted) {
            Some(p) => Some(p),
            None => counts_disagree(rig, sessions).await,
        };
        match problem {
            None => return Ok(t.elapsed()),
            Some(p) if t.elapsed() > CONVERGE_DEADLINE => {
                return Err(format!("not converged after {CONVERGE_DEADLINE:?}: {p}"));
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The first client that lacks acknowledged messages of its audience, with a few of them.
fn missing(sessions: &Sessions, posted: &[Posted]) -> Option<String> {
    for client in sessions.clients() {
        let c = client.lock().unwrap();
        let have: BTreeSet<&str> = c
            .conns
            .iter()
            .flat_map(|conn| conn.events.iter())
            .filter_map(|s| s.external_id.as_deref())
            .chain(c.reloaded.iter().map(String::as_str))
            .collect();
        let lacking: Vec<&str> = posted
            .iter()
            .filter(|p| p.acked.is_some() && in_audience(c.user, p.customer))
            .map(|p| p.external_id.as_str())
            .filter(|e| !have.contains(e))
            .collect();
        if !lacking.is_empty() {
            return Some(format!(
                "{} lacks {} acknowledged messages, e.g. {:?}",
                c.name,
                lacking.len(),
                &lacking[..lacking.len().min(5)]
            ));
        }
    }
    None
}

/// The first user whose counts disagree (REST `/me`, the thread list, their sessions).
async fn counts_disagree(rig: &Rig, sessions: &Sessions) -> Option<String> {
    let port = *rig.live_ports().first()?;
    for user in USERS {
        let token = member(user);
        let me = match rig.call(Method::GET, port, "/api/v1/me", Some(&token), None).await {
            Ok((200, me)) => me["unread_count"].as_i64(),
            other => return Some(format!("GET /me for {user}: {other:?}")),
        };
        let Some(threads) = pages(rig, port, &token, "/api/v1/threads?view=mine&limit=100", "threads").await else {
            return Some(format!("the thread list of {user} did not load"));
        };
        let listed: i64 = threads.iter().filter_map(|t| t["unread_count"].as_i64()).sum();
        let held: Vec<Option<i64>> = sessions
            .clients()
            .iter()
            .map(|c| c.lock().unwrap())
            .filter(|c| c.user == user)
            .map(|c| c.count)
            .collect();
        if me != Some(listed) || held.iter().any(|h| *h != Some(listed)) {
            return Some(format!(
                "{user}: /me says {me:?}, the thread list sums to {listed}, the sessions hold {held:?}"
            ));
        }
    }
    None
}

/// A delivery and where it came: for reading a slow one against the faults.
pub struct Slow {
    pub delay: Duration,
    pub client: String,
    pub external_id: String,
    pub acked: Instant,
    pub conn: usize,
    pub port: u16,
    pub opened: Instant,
    pub resumed_from: Option<u64>,
}

/// What the history shows.
#[derive(Default)]
pub struct Report {
    pub violations: Vec<String>,
    pub converged: Option<Result<Duration, String>>,
    pub delays: Vec<Duration>,
    /// The slowest deliveries, slowest first.
    pub slowest: Vec<Slow>,
    pub message_frames: usize,
    pub event_frames: usize,
    pub connections: usize,
    pub resyncs: usize,
    pub failed_handshakes: u32,
    pub dropped: u32,
    pub reloaded_only: usize,
    pub endings: BTreeMap<String, usize>,
    pub kinds: BTreeMap<String, usize>,
}

impl Report {
    fn violation(&mut self, v: String) {
        if self.violations.len() < 50 {
            self.violations.push(v);
        }
    }

    pub fn assert_clean(&self) {
        if let Some(Err(e)) = &self.converged {
            panic!("{e}\nand {} violations: {:#?}", self.violations.len(), self.violations);
        }
        assert!(
            self.violations.is_empty(),
            "{} violations of the history's rules: {:#?}",
            self.violations.len(),
            self.violations
        );
    }
}

/// Checks every client's history against what was posted and acknowledged.
pub fn check(posted: &[Posted], clients: &[Client], converged: Result<Duration, String>) -> Report {
    let mut r = Report {
        converged: Some(converged),
        ..Report::default()
    };
    let by_external: HashMap<&str, &Posted> = posted.iter().map(|p| (p.external_id.as_str(), p)).collect();
    for c in clients {
        r.connections += c.conns.len();
        r.failed_handshakes += c.failed_handshakes;
        r.dropped += c.dropped;
        // external_id → (event ids carrying it, first arrival, its connection).
        let mut got: HashMap<&str, (BTreeSet<u64>, Instant, usize)> = HashMap::new();
        for (n, conn) in c.conns.iter().enumerate() {
            r.resyncs += usize::from(conn.resync);
            let ending = conn.ended.split(':').next().unwrap_or_default().to_owned();
            *r.endings.entry(ending).or_default() += 1;
            let mut previous = conn.resumed_from;
            for seen in &conn.events {
                r.event_frames += 1;
                *r.kinds.entry(seen.kind.clone()).or_default() += 1;
                if let Some(p) = previous {
                    if seen.id <= p {
                        r.violation(format!(
                            "{} connection {n} (port {}, resumed from {:?}): id {} after {p}",
                            c.name, conn.port, conn.resumed_from, seen.id
                        ));
                    }
                }
                previous = Some(seen.id);
                let Some(external) = seen.external_id.as_deref() else {
                    continue;
                };
                r.message_frames += 1;
                let Some(p) = by_external.get(external) else {
                    r.violation(format!("{}: phantom message.new {external} (never posted)", c.name));
                    continue;
                };
                if !in_audience(c.user, p.customer) {
                    r.violation(format!(
                        "{}: message.new {external} from {} is not for this user",
                        c.name, CUSTOMERS[p.customer]
                    ));
                }
                if let Some(ack) = &p.acked {
                    if seen.message_id.as_deref() != Some(ack.message_id.as_str()) {
                        r.violation(format!(
                            "{}: message.new {external} carries message {:?}, acknowledged as {}",
                            c.name, seen.message_id, ack.message_id
                        ));
                    }
                }
                got.entry(external)
                    .or_insert_with(|| (BTreeSet::new(), seen.at, n))
                    .0
                    .insert(seen.id);
            }
        }
        for p in posted.iter().filter(|p| in_audience(c.user, p.customer)) {
            let Some(ack) = &p.acked else { continue };
            match got.get(p.external_id.as_str()) {
                Some((ids, at, n)) => {
                    if ids.len() > 1 {
                        r.violation(format!("{}: {} arrived as events {ids:?}", c.name, p.external_id));
                    }
                    let delay = at.saturating_duration_since(ack.at);
                    r.delays.push(delay);
                    let conn = &c.conns[*n];
                    r.slowest.push(Slow {
                        delay,
                        client: c.name.clone(),
                        external_id: p.external_id.clone(),
                        acked: ack.at,
                        conn: *n,
                        port: conn.port,
                        opened: conn.opened,
                        resumed_from: conn.resumed_from,
                    });
                    r.slowest.sort_by_key(|s| std::cmp::Reverse(s.delay));
                    r.slowest.truncate(3);
                }
                None if c.reloaded.contains(&p.external_id) => r.reloaded_only += 1,
                None => r.violation(format!("{}: acknowledged {} never arrived", c.name, p.external_id)),
            }
        }
    }
    r
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Prints the run's figures.
pub fn print_figures(
    seed: u64,
    posted: &[Posted],
    reads: (u32, u32),
    faults: &Faults,
    clients: &[Client],
    r: &Report,
    wall: Duration,
) {
    let acked: Vec<&Posted> = posted.iter().filter(|p| p.acked.is_some()).collect();
    let retried_200 = acked.iter().filter(|p| p.acked.as_ref().unwrap().status == 200).count();
    let mut reasons: BTreeMap<&str, u32> = BTreeMap::new();
    for p in posted {
        for (why, n) in &p.failures {
            *reasons.entry(why).or_default() += n;
        }
    }
    let failed: u32 = posted.iter().map(Posted::failed_tries).sum();
    let mut to_ack: Vec<(Duration, &Posted)> = acked
        .iter()
        .map(|p| (p.acked.as_ref().unwrap().at - p.first_try, *p))
        .collect();
    to_ack.sort_by_key(|(d, _)| *d);
    let ack_waits: Vec<Duration> = to_ack.iter().map(|(d, _)| *d).collect();
    // The longest stretch without any acknowledgement.
    let mut ack_times: Vec<Instant> = acked.iter().map(|p| p.acked.as_ref().unwrap().at).collect();
    ack_times.sort();
    let gap = ack_times
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max_by_key(|(d, _)| *d);
    let mut delays = r.delays.clone();
    delays.sort();
    let offset = |t: Instant| t.saturating_duration_since(faults.started).as_secs_f64();

    eprintln!("chaos figures (seed {seed}, wall {:.1}s):", wall.as_secs_f64());
    eprintln!(
        "  messages: {} posted, {} acknowledged ({} of them 200 on a retry), {} never acknowledged",
        posted.len(),
        acked.len(),
        retried_200,
        posted.len() - acked.len()
    );
    eprintln!("  failed tries: {failed} {reasons:?}");
    if let Some((longest, p)) = to_ack.last() {
        eprintln!(
            "  post to ack: p50 {:?}, p99 {:?}, max {longest:.1?} ({} first tried at {:.1}s)",
            percentile(&ack_waits, 0.5),
            percentile(&ack_waits, 0.99),
            p.external_id,
            offset(p.first_try)
        );
    }
    if let Some((d, from)) = gap {
        eprintln!("  longest time without an ack: {d:.1?} from {:.1}s", offset(from));
    }
    eprintln!("  read/unread marks: {} ok, {} failed", reads.0, reads.1);
    eprintln!("  faults: {} {:?}", faults.log.len(), faults.by_kind());
    eprintln!(
        "  deliveries: {} message.new frames ({} events in all) on {} connections; {} resyncs, {} reached only by a reload; {} failed handshakes, {} drops",
        r.message_frames, r.event_frames, r.connections, r.resyncs, r.reloaded_only, r.failed_handshakes, r.dropped
    );
    eprintln!("  events by type: {:?}", r.kinds);
    eprintln!("  connections ended: {:?}", r.endings);
    eprintln!(
        "  ack to delivery: p50 {:?}, p99 {:?}, max {:?} over {} deliveries",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or_default(),
        delays.len()
    );
    eprintln!(
        "  deliveries later than 1 s after the ack: {}",
        delays.iter().filter(|d| **d > Duration::from_secs(1)).count()
    );
    for s in &r.slowest {
        eprintln!(
            "  slow: {} to {}, {:.1?} after its ack at {:.1}s, on connection {} (port {}, opened at {:.1}s, resumed from {:?})",
            s.external_id,
            s.client,
            s.delay,
            offset(s.acked),
            s.conn,
            s.port,
            offset(s.opened),
            s.resumed_from
        );
    }
    // The history of the client that waited longest, when it waited more than a second.
    if let Some(s) = r.slowest.first().filter(|s| s.delay > Duration::from_secs(1)) {
        for (n, conn) in clients
            .iter()
            .filter(|c| c.name == s.client)
            .flat_map(|c| c.conns.iter().enumerate())
        {
            eprintln!(
                "    {} connection {n}: port {}, dialed {:.1}s, opened {:.1}s, closed {:?}s ({}), resumed from {:?}, ids {:?}..{:?}",
                s.client,
                conn.port,
                offset(conn.dialed),
                offset(conn.opened),
                conn.closed.map(|t| (offset(t) * 10.0).round() / 10.0),
                conn.ended,
                conn.resumed_from,
                conn.events.first().map(|e| e.id),
                conn.events.last().map(|e| e.id),
            );
        }
    }
    match &r.converged {
        Some(Ok(d)) => eprintln!("  converged {d:.1?} after the traffic stopped"),
        Some(Err(e)) => eprintln!("  {e}"),
        None => {}
    }
    eprintln!("  violations: {}", r.violations.len());
}

/// The checker on made-up histories: a clean one passes, and each broken rule is caught.
#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::{
        clients::{Conn, Seen},
        traffic::Ack,
    };

    fn posted(external: &str, customer: usize, at: Instant) -> Posted {
        Posted {
            external_id: external.into(),
            customer,
            first_try: at,
            acked: Some(Ack {
                at,
                status: 201,
                message_id: format!("m_{external}"),
            }),
            failures: BTreeMap::new(),
        }
    }

    fn new(id: u64, external: &str, at: Instant) -> Seen {
        Seen {
            id,
            kind: "message.new".into(),
            external_id: Some(external.into()),
            message_id: Some(format!("m_{external}")),
            at,
        }
    }

    fn client(user: &'static str, conns: Vec<(Option<u64>, Vec<Seen>)>) -> Client {
        Client {
            name: user.into(),
            user,
            conns: conns
                .into_iter()
                .map(|(resumed_from, events)| Conn {
                    port: 1,
                    opened: Instant::now(),
                    dialed: Instant::now(),
                    closed: None,
                    resumed_from,
                    resync: false,
                    events,
                    ended: "stopped".into(),
                })
                .collect(),
            reloaded: HashSet::new(),
            count: Some(0),
            failed_handshakes: 0,
            dropped: 0,
        }
    }

    fn violations(posted: &[Posted], clients: &[Client]) -> Vec<String> {
        check(posted, clients, Ok(Duration::ZERO)).violations
    }

    #[test]
    fn the_checker_passes_a_clean_history_and_catches_each_broken_rule() {
        let t = Instant::now();
        let sent = [posted("A", 3, t), posted("B", 3, t)];
        // olga hears customer 3: A on one connection, B after resuming from A's id.
        let clean = client(
            "olga",
            vec![(None, vec![new(5, "A", t)]), (Some(5), vec![new(6, "B", t)])],
        );
        assert_eq!(violations(&sent, &[clean]), Vec::<String>::new());

        let cases: [(&str, Client); 6] = [
            ("never arrived", client("olga", vec![(None, vec![new(5, "A", t)])])),
            (
                "arrived as events",
                client(
                    "olga",
                    vec![(None, vec![new(5, "A", t), new(6, "B", t), new(7, "B", t)])],
                ),
            ),
            (
                "phantom",
                client(
                    "olga",
                    vec![(None, vec![new(5, "A", t), new(6, "B", t), new(7, "Z", t)])],
                ),
            ),
            (
                "id 5 after 6",
                client("olga", vec![(None, vec![new(6, "B", t), new(5, "A", t)])]),
            ),
            (
                "resumed from Some(5)): id 5",
                client(
                    "olga",
                    vec![
                        (None, vec![new(5, "A", t)]),
                        (Some(5), vec![new(5, "A", t), new(6, "B", t)]),
                    ],
                ),
            ),
            ("not for this user", client("nick", vec![(None, vec![new(5, "A", t)])])),
        ];
        for (what, history) in cases {
            let found = violations(&sent, &[history]);
            assert!(
                found.iter().any(|v| v.contains(what)),
                "expected {what:?} among {found:#?}"
            );
        }
    }
}
