//! The workloads W1–W4 and the scales they run at. Each run starts its servers fresh, sets
//! up the directory, opens the clients, measures, and stops everything.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use tokio::{
    sync::Semaphore,
    time::{Instant, sleep_until},
};

use crate::{
    backends::{Postgres, Redis},
    proc::{cpu_secs_all, rss_bytes},
    results::{Run, metric},
    systems::{Audience, Driver, Env, Server, System},
    workers::Workers,
};

/// Sizes of every workload.
#[derive(Debug, Clone)]
pub struct Scale {
    pub name: &'static str,
    pub repeats: u32,
    /// W1: sessions at the first reading, then at the most one process may hold.
    pub w1_sessions: usize,
    pub w1_max_sessions: usize,
    pub w2_sessions: usize,
    pub w2_start_rate: f64,
    pub w2_step_secs: f64,
    pub w2_measure_secs: f64,
    /// Rate steps at most (the search stops there even if the last step passed).
    pub w2_max_steps: u32,
    pub w3_sessions: usize,
    pub w3_latency_events: u64,
    pub w3_events: u64,
    pub w4_sessions: usize,
    pub w4_rate: f64,
    pub w4_secs: f64,
}

impl Scale {
    pub fn named(name: &str) -> Result<Scale> {
        Ok(match name {
            // CI's smoke run: every path once, in seconds.
            "tiny" => Scale {
                name: "tiny",
                repeats: 1,
                w1_sessions: 100,
                w1_max_sessions: 200,
                w2_sessions: 150,
                w2_start_rate: 100.0,
                w2_step_secs: 1.0,
                w2_measure_secs: 1.0,
                w2_max_steps: 2,
                w3_sessions: 100,
                w3_latency_events: 5,
                w3_events: 50,
                w4_sessions: 150,
                w4_rate: 100.0,
                w4_secs: 1.0,
            },
            "quick" => Scale {
                name: "quick",
                repeats: 2,
                w1_sessions: 2_000,
                w1_max_sessions: 5_000,
                w2_sessions: 3_000,
                w2_start_rate: 500.0,
                w2_step_secs: 2.0,
                w2_measure_secs: 3.0,
                w2_max_steps: 12,
                w3_sessions: 1_000,
                w3_latency_events: 20,
                w3_events: 2_000,
                w4_sessions: 3_000,
                w4_rate: 1_000.0,
                w4_secs: 10.0,
            },
            "full" => Scale {
                name: "full",
                repeats: 3,
                w1_sessions: 10_000,
                // The open-file limit is 20,000 per process; the server needs a few dozen
                // descriptors of its own (listener, epoll, files, Redis).
                w1_max_sessions: 19_700,
                w2_sessions: 9_999,
                w2_start_rate: 1_000.0,
                w2_step_secs: 4.0,
                w2_measure_secs: 8.0,
                w2_max_steps: 16,
                w3_sessions: 10_000,
                w3_latency_events: 30,
                w3_events: 300,
                w4_sessions: 9_999,
                w4_rate: 1_000.0,
                w4_secs: 10.0,
            },
            other => bail!("unknown scale {other:?} (tiny, quick, full)"),
        })
    }
}

/// Server and client CPU over one phase.
struct Meter {
    servers: Vec<u32>,
    clients: Vec<u32>,
    at: Instant,
    server0: f64,
    client0: f64,
}

struct Measured {
    wall: f64,
    server_cpu: f64,
    client_cpu: f64,
}

impl Meter {
    fn start(servers: &[u32], workers: &Workers) -> Meter {
        let mut clients = workers.pids();
        clients.push(std::process::id());
        Meter {
            server0: cpu_secs_all(servers),
            client0: cpu_secs_all(&clients),
            servers: servers.to_vec(),
            clients,
            at: Instant::now(),
        }
    }

    fn stop(&self) -> Measured {
        Measured {
            wall: self.at.elapsed().as_secs_f64(),
            server_cpu: cpu_secs_all(&self.servers) - self.server0,
            client_cpu: cpu_secs_all(&self.clients) - self.client0,
        }
    }
}

impl Measured {
    /// The load tool shares one core: above 90% of it, the client is the limit.
    fn client_limited(&self) -> bool {
        self.client_cpu / self.wall > 0.9
    }

    fn record(&self, run: &mut Run) {
        run.metrics
            .insert(metric::CLIENT_CPU_SHARE.into(), self.client_cpu / self.wall);
        run.metrics
            .insert(metric::SERVER_CPU_SHARE.into(), self.server_cpu / self.wall);
        run.client_limited |= self.client_limited();
    }
}

fn percentiles(run: &mut Run, h: &Histogram<u64>) {
    let ms = |us: u64| us as f64 / 1000.0;
    run.metrics.insert(metric::P50_MS.into(), ms(h.value_at_quantile(0.50)));
    run.metrics.insert(metric::P99_MS.into(), ms(h.value_at_quantile(0.99)));
    run.metrics
        .insert(metric::P999_MS.into(), ms(h.value_at_quantile(0.999)));
    run.metrics.insert(metric::MAX_MS.into(), ms(h.max()));
    run.cdf = cdf(h);
}

/// The distribution as (ms, quantile) points for plotting.
fn cdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for q in (0..=100).map(|i| i as f64 / 100.0).chain([0.995, 0.999, 0.9999, 1.0]) {
        out.push((h.value_at_quantile(q) as f64 / 1000.0, q));
    }
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

/// Enough worker processes that none holds more than 5,000 clients, and at least `min`.
fn workers_for(sessions: usize, min: usize) -> Result<Workers> {
    Workers::spawn(sessions.div_ceil(5_000).max(min))
}

fn param(run: &mut Run, k: &str, v: impl ToString) {
    run.params.insert(k.into(), v.to_string());
}

fn new_run(system: System, workload: &str, repeat: u32) -> Run {
    Run {
        system: system.name().into(),
        workload: workload.into(),
        repeat,
        ..Run::default()
    }
}

/// Opens `sessions` clients, user k at location `loc(k)`, client k on server `node(k)`.
#[allow(clippy::too_many_arguments)]
async fn open(
    workers: &mut Workers,
    driver: &Driver,
    system: System,
    servers: &[&Server],
    sessions: usize,
    loc: impl Fn(usize) -> usize,
    node: impl Fn(usize) -> usize,
    report_done: bool,
) -> Result<(usize, f64)> {
    let clients = (0..sessions).map(|k| (node(k), driver.client(k, loc(k)))).collect();
    let addrs: Vec<String> = servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
    let at = Instant::now();
    let (ok, failed, first_error) = workers.connect(system.proto(), &addrs, clients, report_done).await?;
    let secs = at.elapsed().as_secs_f64();
    if failed > 0 {
        eprintln!(
            "  {failed} of {sessions} clients failed to open: {}",
            first_error.unwrap_or_default()
        );
    }
    Ok((ok, secs))
}

/// W1: idle authenticated sessions; memory per session and connect rate.
pub async fn w1(env: &Env, system: System, scale: &Scale, repeat: u32) -> Result<Run> {
    let mut run = new_run(system, "W1", repeat);
    param(&mut run, "sessions", scale.w1_sessions);
    param(&mut run, "sessions (max)", scale.w1_max_sessions);
    let server = Server::start(system, env, None).await?;
    let driver = Driver::new(system)?;
    let mut workers = workers_for(scale.w1_max_sessions, 1)?;
    // One session first, so the runtime's one-off allocations are not counted per session.
    let mut warm = Workers::spawn(1)?;
    open(&mut warm, &driver, system, &[&server], 1, |_| 0, |_| 0, false).await?;
    settle().await;
    let before = rss_bytes(server.pid)?;
    let (ok, secs) = open(
        &mut workers,
        &driver,
        system,
        &[&server],
        scale.w1_sessions,
        |_| 0,
        |_| 0,
        false,
    )
    .await?;
    settle().await;
    let after = rss_bytes(server.pid)?;
    run.metrics.insert(metric::SESSIONS.into(), ok as f64);
    run.metrics.insert(metric::CONNECT_PER_S.into(), ok as f64 / secs);
    run.metrics.insert(
        metric::RSS_PER_SESSION.into(),
        (after.saturating_sub(before)) as f64 / ok.max(1) as f64,
    );
    run.metrics.insert(metric::RSS_MIB.into(), after as f64 / 1048576.0);
    // Then as many as one process may hold.
    let more = scale.w1_max_sessions.saturating_sub(scale.w1_sessions);
    let mut extra = workers_for(more, 1)?;
    let (ok2, _) = open(&mut extra, &driver, system, &[&server], more, |_| 0, |_| 0, false).await?;
    settle().await;
    let top = rss_bytes(server.pid)?;
    let total = ok + ok2;
    run.metrics.insert(metric::SESSIONS_MAX.into(), total as f64);
    run.metrics.insert(
        metric::RSS_PER_SESSION_MAX.into(),
        (top.saturating_sub(before)) as f64 / total.max(1) as f64,
    );
    if total < scale.w1_max_sessions {
        run.notes.push(format!(
            "{}: {total} of {} sessions opened",
            system.name(),
            scale.w1_max_sessions
        ));
    }
    extra.close().await;
    workers.close().await;
    warm.close().await;
    server.stop().await;
    Ok(run)
}

/// Lets the server finish what the last handshakes started before reading its memory.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// What one rate step saw.
struct Step {
    sent: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
    delivered: u64,
    expected: u64,
    measured: Measured,
    /// Messages per second actually sent.
    achieved: f64,
}

impl Step {
    /// The figures of a measured step: CPU per message and per delivery, rates, and a note
    /// when something was lost.
    fn record(&self, run: &mut Run, system: System) {
        let msgs = (self.sent - self.errors).max(1) as f64;
        let m = &self.measured;
        run.metrics
            .insert(metric::CPU_US_PER_MESSAGE.into(), m.server_cpu * 1e6 / msgs);
        run.metrics.insert(
            metric::CPU_US_PER_DELIVERY.into(),
            m.server_cpu * 1e6 / self.delivered.max(1) as f64,
        );
        run.metrics.insert(metric::MESSAGES_PER_S.into(), msgs / m.wall);
        run.metrics
            .insert(metric::DELIVERIES_PER_S.into(), self.delivered as f64 / m.wall);
        m.record(run);
        if self.errors > 0 || self.delivered < self.expected {
            run.notes.push(format!(
                "{}: {} errors{}, {} of {} delivered",
                system.name(),
                self.errors,
                self.first_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (the first: {e})")),
                self.delivered,
                self.expected
            ));
        }
    }

    fn passes(&self, rate: f64) -> bool {
        self.errors == 0
            && self.delivered >= self.expected
            && self.achieved >= 0.95 * rate
            && self.hist.value_at_quantile(0.99) < 50_000
    }
}

/// Sends messages to groups at `rate` for `secs` (open loop: each message leaves at its
/// time whatever happened to the ones before), then waits for their deliveries.
#[allow(clippy::too_many_arguments)]
async fn step(
    workers: &mut Workers,
    driver: &Arc<Driver>,
    servers: &[u32],
    base: &str,
    groups: usize,
    seq0: u64,
    rate: f64,
    secs: f64,
    pick: impl Fn(usize) -> bool + Copy,
    per_message: u64,
) -> Result<Step> {
    workers.reset().await?;
    let meter = Meter::start(servers, workers);
    let n = (rate * secs).round().max(1.0) as u64;
    let gate = Arc::new(Semaphore::new(512));
    let svc: Arc<str> = driver.sender_token().into();
    let errors = Arc::new(std::sync::Mutex::new((0u64, None::<String>)));
    let start = Instant::now();
    for k in 0..n {
        sleep_until(start + Duration::from_secs_f64(k as f64 / rate)).await;
        let permit = gate.clone().acquire_owned().await?;
        let (driver, svc, errors, base) = (driver.clone(), svc.clone(), errors.clone(), base.to_string());
        let seq = seq0 + k;
        tokio::spawn(async move {
            if let Err(e) = driver
                .send(&base, &svc, seq, Audience::Group(seq as usize % groups))
                .await
            {
                let mut errs = errors.lock().unwrap();
                errs.0 += 1;
                errs.1.get_or_insert(format!("{e:#}"));
            }
            drop(permit);
        });
    }
    let _all = gate.acquire_many(512).await?;
    let achieved = n as f64 / start.elapsed().as_secs_f64();
    let (errs, first_error) = errors.lock().unwrap().clone();
    let expected = (n - errs) * per_message;
    // Wait for the deliveries: until all arrived, or nothing arrived for a while.
    let mut delivered = 0;
    let mut last_change = Instant::now();
    loop {
        let m = workers.merged(pick).await?;
        if m.marked != delivered {
            delivered = m.marked;
            last_change = Instant::now();
        }
        if delivered >= expected || last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let measured = meter.stop();
    let all = workers.merged(pick).await?;
    Ok(Step {
        sent: n,
        errors: errs,
        first_error,
        hist: all.hist,
        delivered,
        expected,
        measured,
        achieved,
    })
}

/// W2: targeted fan-out to 3 users per message; the highest rate with p99 under 50 ms, and
/// the figures at half of it.
pub async fn w2(env: &Env, system: System, scale: &Scale, repeat: u32) -> Result<Run> {
    let mut run = new_run(system, "W2", repeat);
    let groups = scale.w2_sessions / 3;
    param(&mut run, "sessions", groups * 3);
    param(&mut run, "recipients per message", 3);
    param(
        &mut run,
        "rate search",
        format!(
            "from {} msg/s, x1.5 per {} s step, until p99 >= 50 ms or the rate is not kept",
            scale.w2_start_rate, scale.w2_step_secs
        ),
    );
    param(
        &mut run,
        "measured at",
        format!("half the highest passing rate, {} s", scale.w2_measure_secs),
    );
    let server = Server::start(system, env, None).await?;
    let driver = Driver::new(system)?;
    driver.setup_groups(&server.base(), groups).await?;
    let mut workers = workers_for(groups * 3, 2)?;
    let (ok, _) = open(
        &mut workers,
        &driver,
        system,
        &[&server],
        groups * 3,
        |k| k / 3,
        |_| 0,
        false,
    )
    .await?;
    run.metrics.insert(metric::SESSIONS.into(), ok as f64);
    let servers = [server.pid];
    let mut rate = scale.w2_start_rate;
    let mut best: Option<f64> = None;
    let mut seq = 0;
    let mut steps = 0;
    loop {
        let s = step(
            &mut workers,
            &driver,
            &servers,
            &server.base(),
            groups,
            seq,
            rate,
            scale.w2_step_secs,
            |_| true,
            3,
        )
        .await?;
        seq += s.sent;
        let p99 = s.hist.value_at_quantile(0.99) as f64 / 1000.0;
        eprintln!(
            "  {} W2 step {rate:.0} msg/s: sent {} at {:.0}/s, delivered {}/{}, p99 {p99:.2} ms, errors {}, server cpu {:.0}%, client cpu {:.0}%",
            system.name(),
            s.sent,
            s.achieved,
            s.delivered,
            s.expected,
            s.errors,
            100.0 * s.measured.server_cpu / s.measured.wall,
            100.0 * s.measured.client_cpu / s.measured.wall
        );
        if !s.passes(rate) {
            if let Some(e) = s.first_error {
                run.notes.push(format!("{} at {rate:.0} msg/s: {e}", system.name()));
            }
            if s.measured.client_limited() {
                run.client_limited = true;
            }
            break;
        }
        best = Some(rate);
        steps += 1;
        if steps >= scale.w2_max_steps {
            run.notes.push(format!(
                "{}: the rate search stopped at its last step ({rate:.0} msg/s passed)",
                system.name()
            ));
            break;
        }
        rate *= 1.5;
    }
    let Some(best) = best else {
        bail!(
            "{} missed p99 < 50 ms even at {} msg/s",
            system.name(),
            scale.w2_start_rate
        );
    };
    run.metrics.insert(metric::MAX_RATE.into(), best);
    run.metrics.insert("max_deliveries_per_s".into(), best * 3.0);
    let half = best / 2.0;
    param(&mut run, "rate measured", format!("{half:.0} msg/s"));
    let s = step(
        &mut workers,
        &driver,
        &servers,
        &server.base(),
        groups,
        seq,
        half,
        scale.w2_measure_secs,
        |_| true,
        3,
    )
    .await?;
    percentiles(&mut run, &s.hist);
    s.record(&mut run, system);
    workers.close().await;
    server.stop().await;
    Ok(run)
}

/// W3: one message to every session; time until the last has it, then CPU per delivery
/// over a stream of broadcasts (at most `WINDOW` not yet everywhere).
pub async fn w3(env: &Env, system: System, scale: &Scale, repeat: u32) -> Result<Run> {
    const WINDOW: u64 = 64;
    let mut run = new_run(system, "W3", repeat);
    let n = scale.w3_sessions;
    param(&mut run, "sessions", n);
    param(
        &mut run,
        "latency phase",
        format!("{} broadcasts, one at a time", scale.w3_latency_events),
    );
    param(
        &mut run,
        "throughput phase",
        format!("{} broadcasts, at most {WINDOW} in flight", scale.w3_events),
    );
    let server = Server::start(system, env, None).await?;
    let driver = Driver::new(system)?;
    driver.setup_broadcast(&server.base(), n).await?;
    let mut workers = workers_for(n, 2)?;
    let (ok, _) = open(&mut workers, &driver, system, &[&server], n, |_| 0, |_| 0, true).await?;
    run.metrics.insert(metric::SESSIONS.into(), ok as f64);
    if ok < n {
        bail!("{}: only {ok} of {n} sessions opened", system.name());
    }
    let svc = driver.sender_token();
    let base = server.base();
    workers.reset().await?;
    let mut last = Vec::new();
    for seq in 0..scale.w3_latency_events {
        let sent = driver.send(&base, &svc, seq, Audience::Everyone).await?;
        let done = workers.wait_done(seq, Duration::from_secs(60)).await?;
        last.push(done.saturating_sub(sent) as f64 / 1e6);
    }
    let m = workers.merged(|_| true).await?;
    percentiles(&mut run, &m.hist);
    last.sort_by(f64::total_cmp);
    run.metrics
        .insert(metric::LAST_DELIVERY_P50_MS.into(), last[last.len() / 2]);
    run.metrics
        .insert(metric::LAST_DELIVERY_MAX_MS.into(), *last.last().unwrap_or(&0.0));

    workers.reset().await?;
    let meter = Meter::start(&[server.pid], &workers);
    let first = scale.w3_latency_events;
    let end = first + scale.w3_events;
    // Sends overlap (each in its own task); the window counts broadcasts not yet everywhere.
    let mut sends = Vec::new();
    for seq in first..end {
        if seq >= first + WINDOW {
            workers.wait_done(seq - WINDOW, Duration::from_secs(60)).await?;
        }
        let (driver, base, svc) = (driver.clone(), base.clone(), svc.clone());
        sends.push(tokio::spawn(async move {
            driver.send(&base, &svc, seq, Audience::Everyone).await
        }));
    }
    for seq in end.saturating_sub(WINDOW).max(first)..end {
        workers.wait_done(seq, Duration::from_secs(60)).await?;
    }
    for send in sends {
        send.await??;
    }
    let measured = meter.stop();
    let m = workers.merged(|_| true).await?;
    let deliveries = scale.w3_events * ok as u64;
    run.metrics.insert(
        metric::CPU_US_PER_DELIVERY.into(),
        measured.server_cpu * 1e6 / deliveries as f64,
    );
    run.metrics
        .insert(metric::DELIVERIES_PER_S.into(), deliveries as f64 / measured.wall);
    run.metrics
        .insert("frames_per_delivery".into(), m.frames as f64 / deliveries as f64);
    measured.record(&mut run);
    workers.close().await;
    server.stop().await;
    Ok(run)
}

/// The first sequence number of W4's warm-up messages: far from the measured ones, so no
/// external id repeats.
const W4_WARMUP_SEQ: u64 = 1 << 40;

/// W4: two nodes on one Redis (Switchboard: on PostgreSQL, with its events relayed over
/// Redis; `switchboard-redis-cluster`: over a Redis Cluster of three primaries); clients split
/// over them, ingestion on the first; latency of the deliveries made by the second node. CPU
/// per message of the nodes, of Redis and of PostgreSQL, and Redis's memory growth over the run.
pub async fn w4(env: &Env, system: System, scale: &Scale, repeat: u32) -> Result<Run> {
    let mut run = new_run(system, "W4", repeat);
    let groups = scale.w4_sessions / 3;
    param(&mut run, "nodes", 2);
    param(&mut run, "sessions", groups * 3);
    param(
        &mut run,
        "rate",
        format!(
            "{} msg/s for {} s, 3 recipients each, posted to node A",
            scale.w4_rate, scale.w4_secs
        ),
    );
    param(&mut run, "latency", "of the deliveries by node B (cross-node)");
    if system.proto() == crate::worker::Proto::Switchboard {
        param(
            &mut run,
            "warm-up",
            "one message per group before measuring, then ANALYZE (as autovacuum would)",
        );
    }
    let redis = if system == System::SwitchboardRedisCluster {
        Redis::cluster(env, 3).await?
    } else {
        Redis::single(env).await?
    };
    param(
        &mut run,
        "redis",
        if redis.cluster_nodes.is_empty() {
            "one redis-server, no persistence".to_string()
        } else {
            format!(
                "a Redis Cluster of {} primaries, no persistence",
                redis.cluster_nodes.len()
            )
        },
    );
    let pg = if system.proto() == crate::worker::Proto::Switchboard {
        let pg = Postgres::start(env, env.postgres_url.as_deref()).await?;
        param(&mut run, "postgresql CPU", pg.counted());
        Some(pg)
    } else {
        None
    };
    let result = w4_measure(env, system, scale, &mut run, groups, &redis, pg.as_ref()).await;
    redis.stop().await;
    if let Some(pg) = pg {
        pg.stop().await;
    }
    result.map(|()| run)
}

async fn w4_measure(
    env: &Env,
    system: System,
    scale: &Scale,
    run: &mut Run,
    groups: usize,
    redis: &Redis,
    pg: Option<&Postgres>,
) -> Result<()> {
    let a = Server::start(system, env, Some((redis, pg))).await?;
    let b = Server::start(system, env, Some((redis, pg)))
        .await
        .context("second node")?;
    let driver = Driver::new(system)?;
    driver.setup_groups(&a.base(), groups).await?;
    let mut workers = workers_for(groups * 3, 4)?;
    let (ok, _) = open(
        &mut workers,
        &driver,
        system,
        &[&a, &b],
        groups * 3,
        |k| k / 3,
        |k| k % 2,
        false,
    )
    .await?;
    run.metrics.insert(metric::SESSIONS.into(), ok as f64);
    let servers = [a.pid, b.pid];
    let on_b = workers.of_server(1, 2);
    if let Some(pg) = pg {
        // The database as a deployment has it after its first minute: every group's thread
        // made, and the planner's statistics gathered (a fresh database has none, and a plan
        // cached before any may scan a tenant's messages where one index probe does).
        step(
            &mut workers,
            &driver,
            &servers,
            &a.base(),
            groups,
            W4_WARMUP_SEQ,
            scale.w4_rate,
            groups as f64 / scale.w4_rate,
            |_| true,
            3,
        )
        .await?;
        pg.analyze().await?;
    }
    let redis_cpu0 = redis.cpu_secs();
    let redis_mem0 = redis.used_memory().await?;
    let pg0 = match pg {
        Some(pg) => Some(pg.cpu_sample().await?),
        None => None,
    };
    let s = step(
        &mut workers,
        &driver,
        &servers,
        &a.base(),
        groups,
        0,
        scale.w4_rate,
        scale.w4_secs,
        |_| true,
        3,
    )
    .await?;
    let redis_cpu = redis.cpu_secs() - redis_cpu0;
    let redis_mem = redis.used_memory().await? as f64 - redis_mem0 as f64;
    let pg_cpu = match (pg, pg0) {
        (Some(pg), Some(before)) => Some(Postgres::cpu_between(&before, &pg.cpu_sample().await?)),
        _ => None,
    };
    let cross = workers.merged(on_b).await?;
    percentiles(run, &cross.hist);
    s.record(run, system);
    let msgs = (s.sent - s.errors).max(1) as f64;
    let nodes_us = s.measured.server_cpu * 1e6 / msgs;
    let redis_us = redis_cpu * 1e6 / msgs;
    let pg_us = pg_cpu.map_or(0.0, |c| c * 1e6 / msgs);
    run.metrics.insert(metric::REDIS_CPU_US_PER_MESSAGE.into(), redis_us);
    if pg_cpu.is_some() {
        run.metrics.insert(metric::POSTGRES_CPU_US_PER_MESSAGE.into(), pg_us);
    }
    run.metrics
        .insert(metric::TOTAL_CPU_US_PER_MESSAGE.into(), nodes_us + redis_us + pg_us);
    run.metrics.insert(metric::REDIS_MEMORY_GROWTH.into(), redis_mem);
    workers.close().await;
    a.stop().await;
    b.stop().await;
    Ok(())
}
