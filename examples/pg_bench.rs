//! Seeds a PostgreSQL database with one big tenant and measures the PostgreSQL store's
//! interactive reads on it: for each, the store call's time (median and p95 of repeated calls
//! after a warm-up, on loopback) and the `EXPLAIN (ANALYZE, BUFFERS)` plan of every query the
//! call ran, with the very SQL and parameters the store binds (`PgStore::explaining`). Writes
//! the report as Markdown (`docs/benchmarks/postgres-1m.md` holds the committed one).
//!
//! ```sh
//! cargo run --release --example pg_bench -- \
//!   --maintenance-url postgres://postgres@127.0.0.1:5432/postgres --database sb_bench_1m \
//!   --messages 1000000 --out docs/benchmarks/postgres-1m.md
//! ```
//!
//! The tenant `big` (with `--messages M`): 20 locations, 200 users, M/50 folders (each with a
//! sales resource and, for 9 in 10, a service resource, spread over the users), M/10 threads
//! spread over the locations (4 in 5 assigned to a folder of their location, 1 in 20 unread),
//! 10 messages a thread over a year (1 in 10 with a photo), 100k events in the log, and the
//! event heads of 1,000 other tenants. It is generated inside PostgreSQL (`INSERT … SELECT
//! FROM generate_series`: one multi-row insert per table, no row crosses the wire), then
//! `VACUUM ANALYZE`d. The database is dropped and made anew unless `--skip-seed`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use switchboard::{
    config::{PostgresSettings, Settings},
    domain::{FolderId, Id, LocationId, PhoneNumber, PhoneParser, TenantId, ThreadId},
    event::Event,
    store::{
        EventLog, InboundInput, Paging, Publisher, Scope, Store, ThreadQuery, ThreadView,
        postgres::{Explained, PgStore},
    },
};
use tokio_postgres::NoTls;

#[derive(Parser)]
struct Args {
    /// A database of the server to create the benchmark's database from.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    maintenance_url: String,
    /// The benchmark's database (dropped and created anew unless --skip-seed).
    #[arg(long, default_value = "sb_bench_1m")]
    database: String,
    /// Messages of the big tenant.
    #[arg(long, default_value_t = 1_000_000)]
    messages: i64,
    /// Measure a database seeded before.
    #[arg(long)]
    skip_seed: bool,
    /// Timed calls per read (after 5 warm-up calls).
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Where to write the report (stdout when absent).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Where a store nobody listens to publishes.
struct Nowhere;

impl Publisher for Nowhere {
    fn publish(&self, _: Vec<Event>) {}
}

fn url_of(maintenance: &str, db: &str) -> String {
    let server = maintenance.rsplit_once('/').map_or(maintenance, |(s, _)| s);
    format!("{server}/{db}")
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The big tenant, generated in the database (see the module's doc). `$1`, where used, is M.
const SEED: &[(&str, &str)] = &[
    (
        "locations",
        "INSERT INTO locations SELECT 'big', 'L' || lpad(i::text, 2, '0'), 'Location ' || i FROM generate_series(0, 19) i",
    ),
    (
        "location numbers",
        "INSERT INTO location_numbers SELECT 'big', '+1555000' || lpad(i::text, 4, '0'), 'L' || lpad(i::text, 2, '0'), 0
         FROM generate_series(0, 19) i",
    ),
    (
        "preferences",
        "INSERT INTO preferences VALUES ('big', true, true)",
    ),
    (
        "users",
        "INSERT INTO users SELECT 'big', 'u' || lpad(i::text, 3, '0'), 'User ' || i FROM generate_series(0, 199) i",
    ),
    (
        "subscriptions",
        "INSERT INTO subscriptions VALUES ('big', 'u000', true), ('big', 'u007', false)",
    ),
    (
        "folders",
        "INSERT INTO folders
         SELECT 'big', 'F' || lpad(i::text, 6, '0'),
                (ARRAY['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez','Martinez',
                       'Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas','Taylor','Moore','Jackson','Martin',
                       'Lee','Perez','Thompson','White','Harris','Sanchez','Clark','Ramirez','Lewis','Robinson',
                       'Walker','Young','Allen','King','Wright','Scott','Torres','Nguyen','Hill','Flores',
                       'Green','Adams','Nelson','Baker','Hall','Rivera','Campbell','Mitchell','Carter','Roberts'])[1 + i % 50]
                || ' ' || (ARRAY['kitchen','bathroom','roof','basement','deck','windows','siding','garage'])[1 + (i / 50) % 8]
                || ' ' || i,
                'L' || lpad((i % 20)::text, 2, '0'),
                'u' || lpad(((i * 7) % 200)::text, 3, '0'),
                CASE WHEN i % 10 = 0 THEN NULL ELSE 'u' || lpad(((i * 13 + 5) % 200)::text, 3, '0') END
         FROM generate_series(0, $1::bigint / 50 - 1) i",
    ),
    (
        "threads",
        "INSERT INTO threads
         SELECT 'big', 't' || lpad(t::text, 7, '0'), 'L' || lpad((t % 20)::text, 2, '0'),
                '+1555' || lpad((1000000 + t)::text, 7, '0'),
                CASE WHEN t % 5 = 0 THEN NULL
                     ELSE 'F' || lpad((t % 20 + 20 * ((t / 20) % ($1::bigint / 1000)))::text, 6, '0') END,
                CASE WHEN t % 20 = 7 THEN 1 + t % 3 ELSE 0 END,
                'm' || lpad((t + (($1::bigint - 1 - t) / ($1::bigint / 10)) * ($1::bigint / 10))::text, 8, '0'),
                1735689600000000 + ((t * 7919) % 31536000 + (($1::bigint - 1 - t) / ($1::bigint / 10)) * 600) * 1000000
         FROM generate_series(0, $1::bigint / 10 - 1) t",
    ),
    (
        "folder numbers",
        "INSERT INTO folder_numbers
         SELECT tenant, folder_id, customer_number, 0 FROM threads WHERE tenant = 'big' AND folder_id IS NOT NULL",
    ),
    (
        "messages",
        "INSERT INTO messages (tenant, id, thread_id, direction, body, attachments, created_at, author_id, external_id)
         SELECT 'big', 'm' || lpad(k::text, 8, '0'), 't' || lpad(t::text, 7, '0'),
                CASE WHEN j % 2 = 0 THEN 'inbound' ELSE 'outbound' END,
                'Message ' || k || ': the water heater in the basement is leaking again, can someone come by today?',
                CASE WHEN k % 10 = 3
                     THEN '[{\"id\":\"a' || k || '\",\"url\":\"https://img.example.com/' || k || '.jpg\",\"content_type\":\"image/jpeg\"}]'
                     ELSE '[]' END,
                1735689600000000 + ((t * 7919) % 31536000 + j * 600) * 1000000,
                CASE WHEN j % 2 = 0 THEN NULL ELSE 'u' || lpad(((t * 7) % 200)::text, 3, '0') END,
                CASE WHEN j % 2 = 0 THEN 'SM' || k ELSE NULL END
         FROM generate_series(0, $1::bigint - 1) k,
              LATERAL (SELECT k % ($1::bigint / 10) AS t, k / ($1::bigint / 10) AS j) x",
    ),
    (
        "events",
        "INSERT INTO events
         SELECT 'big', i, 'message.new', '{\"location\":\"L00\",\"users\":[\"u001\"],\"resources\":[\"u001\"],\"subscribers\":true}',
                '{\"thread\":{\"id\":\"t0000001\",\"location_id\":\"L00\",\"unread\":true,\"unread_count\":1},\"message\":{\"id\":\"m' || i || '\",\"body\":\"Message\"}}'
         FROM generate_series(1, 100000) i",
    ),
    (
        "event heads",
        "INSERT INTO event_heads SELECT 'big', 100000
         UNION ALL SELECT 't' || lpad(i::text, 4, '0'), i FROM generate_series(0, 999) i",
    ),
];

async fn seed(args: &Args, url: &str) -> anyhow::Result<()> {
    let admin = connect(&args.maintenance_url).await?;
    // Two statements: neither may run in the implicit transaction of a multi-statement query.
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", args.database))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{}\"", args.database))
        .await?;
    // The store makes the schema, as `serve` would.
    drop(store(url, 2).await?);
    let c = connect(url).await?;
    let m: i64 = args.messages;
    for (what, sql) in SEED {
        let started = Instant::now();
        let st = c.prepare(sql).await?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            if st.params().is_empty() { vec![] } else { vec![&m] };
        let n = c.execute(&st, &params).await?;
        eprintln!("{what}: {n} rows in {:.1?}", started.elapsed());
    }
    let started = Instant::now();
    c.batch_execute("VACUUM ANALYZE").await?;
    eprintln!("vacuum analyze: {:.1?}", started.elapsed());
    Ok(())
}

async fn store(url: &str, pool_size: usize) -> anyhow::Result<PgStore> {
    let settings = PostgresSettings {
        url: url.into(),
        pool_size,
        timeout_ms: 60_000,
        ..Settings::defaults().postgres
    };
    PgStore::connect(&settings, Arc::new(Nowhere), 100_000).await
}

fn id<T: Id>(s: &str) -> T {
    // unwrap: the benchmark's ids are literals of the valid alphabet.
    T::parse(s).unwrap()
}

fn scope(user: &str, locations: &[&str]) -> Scope {
    Scope {
        tenant: id("big"),
        user: id(user),
        locations: locations.iter().map(|l| id::<LocationId>(l)).collect::<Vec<_>>().into(),
    }
}

/// One measured read: what it is, and the call.
struct Case {
    name: String,
    what: String,
}

struct Timing {
    median: Duration,
    p95: Duration,
}

async fn time<F, Fut, R>(runs: usize, mut call: F) -> anyhow::Result<Timing>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = switchboard::store::StoreResult<R>>,
{
    for _ in 0..5 {
        call().await?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        call().await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(Timing {
        median: samples[samples.len() / 2],
        p95: samples[(samples.len() * 95 / 100).min(samples.len() - 1)],
    })
}

/// Runs every case on `store` (timed) and on `explaining` (plans), in the same order.
macro_rules! measure {
    ($report:expr, $runs:expr, $store:expr, $explaining:expr, $explained:expr, $name:expr, $what:expr, |$s:ident| $call:expr) => {{
        let timing = {
            let $s = &$store;
            time($runs, || $call).await?
        };
        let plans = {
            let $s = &$explaining;
            $call.await?;
            $explained.take()
        };
        $report.push((
            Case {
                name: $name.into(),
                what: $what.into(),
            },
            timing,
            plans,
        ));
    }};
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's `)`: state is field 3, utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux reports these in clock ticks of 1/100 s (USER_HZ).
    (ticks(14) + ticks(15)) / 100.0
}

/// What a plan scans (indexes, or whole tables) and its execution time, in one line.
fn summary(plan: &str) -> String {
    let mut scans: Vec<String> = Vec::new();
    for line in plan.lines() {
        let line = line.trim_start().trim_start_matches("->  ");
        let scan = if let Some(rest) = line.split(" using ").nth(1).filter(|_| line.contains("Index")) {
            rest.split_whitespace().next().map(|i| format!("`{i}`"))
        } else if let Some(rest) = line.strip_prefix("Bitmap Index Scan on ") {
            rest.split_whitespace().next().map(|i| format!("`{i}`"))
        } else if let Some(rest) = line.strip_prefix("Seq Scan on ") {
            rest.split_whitespace().next().map(|t| format!("whole `{t}`"))
        } else {
            None
        };
        if let Some(scan) = scan {
            let loops = line
                .split("loops=")
                .nth(1)
                .and_then(|l| l.trim_end_matches(')').parse::<u64>().ok())
                .unwrap_or(1);
            let scan = if loops > 1 { format!("{scan} ×{loops}") } else { scan };
            if !scans.contains(&scan) {
                scans.push(scan);
            }
        }
    }
    let time = plan
        .lines()
        .find_map(|l| l.strip_prefix("Execution Time: "))
        .unwrap_or("?");
    format!("{}; {time}", scans.join(", "))
}

fn all_locations() -> Vec<String> {
    (0..20).map(|i| format!("L{i:02}")).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = url_of(&args.maintenance_url, &args.database);
    if !args.skip_seed {
        seed(&args, &url).await?;
    }
    let store = store(&url, 2).await?;
    let (explaining, explained): (PgStore, Explained) = store.explaining();
    let locs = all_locations();
    let all: Vec<&str> = locs.iter().map(String::as_str).collect();
    let tenant: TenantId = id("big");
    let runs = args.runs;
    let mut report = Vec::new();

    let page = |view: ThreadView, unread_only: bool| ThreadQuery {
        view,
        unread_only,
        limit: 50,
        before: None,
    };
    let (olga, sam) = (scope("u000", &all), scope("u007", &all));
    let sam_one = scope("u007", &["L07"]);

    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "threads: mine, subscribe-all",
        "GET /threads (50) for a subscribe-all user granted all 20 locations",
        |s| s.threads(&olga, page(ThreadView::Mine, false))
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "threads: mine, subscribe-all, unread only",
        "GET /threads?unread_only=true (50), the same user",
        |s| s.threads(&olga, page(ThreadView::Mine, true))
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "threads: mine, resource",
        "GET /threads (50) for a resource (sales on 100 folders, service on 90) granted all locations",
        |s| s.threads(&sam, page(ThreadView::Mine, false))
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "threads: mine, resource, one location",
        "GET /threads (50), the same resource granted one location",
        |s| s.threads(&sam_one, page(ThreadView::Mine, false))
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "threads: mine, resource, unread only",
        "GET /threads?unread_only=true (50), the resource granted all locations",
        |s| s.threads(&sam, page(ThreadView::Mine, true))
    );
    let first = store.threads(&olga, page(ThreadView::Mine, false)).await?;
    let deep = ThreadQuery {
        before: first.next.clone(),
        ..page(ThreadView::Mine, false)
    };
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "threads: mine, subscribe-all, page 2",
        "GET /threads?before=CURSOR (50), the subscribe-all user's second page",
        |s| s.threads(&olga, deep.clone())
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "threads: resource view",
        "GET /threads?view=resource&resource_id=u042 (50), seen by the subscribe-all user",
        |s| s.threads(&olga, page(ThreadView::Resource(id("u042")), false))
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "threads: resource view, unread only",
        "GET /threads?view=resource&resource_id=u042&unread_only=true (50)",
        |s| s.threads(&olga, page(ThreadView::Resource(id("u042")), true))
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "unread count: subscribe-all",
        "the unread count of the subscribe-all user (every unread thread of 20 locations), as a session's start reads it",
        |s| s.session_start(&olga)
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "unread count: resource",
        "the unread count of the resource, as a session's start reads it",
        |s| s.session_start(&sam)
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "session start",
        "a websocket's hello: subscription, count and log head in one REPEATABLE READ snapshot",
        |s| s.session_start(&sam)
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "GET /me",
        "name, subscription and unread count",
        |s| s.me(&sam)
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "folders: by phone digits",
        "GET /folders?phone=555101234 (numbers containing the digits: 8 folders)",
        |s| s.search_folders(&olga, Some("555101234".into()), None)
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "folders: by name",
        "GET /folders?q=smith (names containing it, case-insensitively; 400 match, 200 listed)",
        |s| s.search_folders(&olga, None, Some("smith".into()))
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "folders: by name, rare",
        "GET /folders?q=garage 1999 (one folder)",
        |s| s.search_folders(&olga, None, Some("garage 1999".into()))
    );
    let thread: ThreadId = id("t0000042");
    let first_page = Paging {
        limit: 50,
        before: None,
    };
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "messages of a thread",
        "GET /threads/{id}/messages (50)",
        |s| s.thread_messages(&olga, &thread, first_page.clone())
    );
    let folder: FolderId = id("F000042");
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "messages of a folder",
        "GET /folders/{id}/messages (50): every message of the folder's threads",
        |s| s.folder_messages(&olga, &folder, first_page.clone())
    );
    let folder_first = store
        .folder_messages(
            &olga,
            &folder,
            Paging {
                limit: 10,
                before: None,
            },
        )
        .await?;
    let folder_next = Paging {
        limit: 10,
        before: folder_first.next,
    };
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "messages of a folder, page 2",
        "GET /folders/{id}/messages?limit=10&before=CURSOR",
        |s| s.folder_messages(&olga, &folder, folder_next.clone())
    );
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "resources",
        "GET /resources: the drop-down over 20 locations",
        |s| s.resources(&olga)
    );
    let tenants: Vec<TenantId> = (0..1000).map(|i| id(&format!("t{i:04}"))).collect();
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "log heads of 1,000 tenants",
        "EventLog::heads for 1,000 tenants in one statement (the new bus, once a second)",
        |s| s.heads(&tenants)
    );
    let head = store.head(&tenant).await?;
    measure!(
        report,
        runs,
        store,
        explaining,
        explained,
        "events after (resume 100)",
        "EventLog::events_after the head minus 100 (limit 10,000)",
        |s| s.events_after(&tenant, head - 100, 10_000)
    );

    // The write path on the big tables: inbound messages to existing threads, one at a time.
    let parser = PhoneParser::new("US").map_err(anyhow::Error::msg)?;
    let number =
        |s: &str| -> anyhow::Result<PhoneNumber> { parser.parse(s).map_err(|_| anyhow::anyhow!("bad number {s}")) };
    let mut n = 0u64;
    let to = number("+15550000002")?;
    let stamp = std::process::id();
    let ingest = time(runs, || {
        n += 1;
        let input = InboundInput {
            external_id: format!("bench-{stamp}-{n}"),
            from: number(&format!("+1555{}", 1_000_000 + 20 * (n % 1000) + 2)).unwrap_or_else(|_| to.clone()),
            to: to.clone(),
            body: "Is someone coming today?".into(),
            attachments: Vec::new(),
            received_at: None,
        };
        let store = &store;
        let tenant = tenant.clone();
        async move { store.ingest(&tenant, input).await }
    })
    .await?;

    // CPU per inbound message: this process (the store's side: pool, driver, plan, encoding)
    // and the server's backends serving the pool, over `cpu_messages` sequential ingests.
    let cpu_messages = 2000u64;
    let backends = || async {
        let rows = connect(&url)
            .await?
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'switchboard'",
                &[],
            )
            .await?;
        anyhow::Ok(rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>())
    };
    let pids = backends().await?;
    let (own_before, server_before) = (cpu_of("self"), pids.iter().map(|p| cpu_of(&p.to_string())).sum::<f64>());
    let started = Instant::now();
    for _ in 0..cpu_messages {
        n += 1;
        let input = InboundInput {
            external_id: format!("bench-{stamp}-{n}"),
            from: number(&format!("+1555{}", 1_000_000 + 20 * (n % 1000) + 2))?,
            to: to.clone(),
            body: "Is someone coming today?".into(),
            attachments: Vec::new(),
            received_at: None,
        };
        store.ingest(&tenant, input).await?;
    }
    let wall = started.elapsed();
    let after_pids = backends().await?;
    anyhow::ensure!(
        after_pids == pids,
        "the pool's connections changed during the CPU phase"
    );
    let own = cpu_of("self") - own_before;
    let server = pids.iter().map(|p| cpu_of(&p.to_string())).sum::<f64>() - server_before;
    let per = |secs: f64| secs * 1e6 / cpu_messages as f64;

    let version: String = connect(&url).await?.query_one("SHOW server_version", &[]).await?.get(0);
    let counts = connect(&url)
        .await?
        .query_one(
            "SELECT (SELECT count(*) FROM messages WHERE tenant = 'big'), (SELECT count(*) FROM threads WHERE tenant = 'big'),
                    (SELECT count(*) FROM folders WHERE tenant = 'big'),
                    (SELECT count(*) FROM threads WHERE tenant = 'big' AND unread_count > 0),
                    pg_size_pretty(pg_database_size(current_database()))",
            &[],
        )
        .await?;
    let mut md = String::new();
    md.push_str(&format!(
        "# PostgreSQL store: interactive reads on a tenant of {} messages\n\n",
        args.messages
    ));
    md.push_str(&format!(
        "Made by `examples/pg_bench.rs` (the command below) on PostgreSQL {version} at 127.0.0.1 (the machine's \
         server, default settings: `shared_buffers` 128 MB), 2 cores, in a {} database. The tenant: {} messages (with the \
         benchmark's own inbound messages), {} threads over 20 locations ({} unread), {} folders, 200 users, 100k events in the log, and the heads of \
         1,000 other tenants. Times are of the store call in-process (the query or queries, their round trips on \
         loopback, decoding): median and p95 of {runs} calls after 5 warm-up calls, on a warm cache. Each plan is \
         `EXPLAIN (ANALYZE, BUFFERS)` of the very SQL and parameters the call ran (`PgStore::explaining`).\n\n",
        counts.get::<_, String>(4),
        counts.get::<_, i64>(0),
        counts.get::<_, i64>(1),
        counts.get::<_, i64>(3),
        counts.get::<_, i64>(2),
    ));
    md.push_str("```sh\ncargo run --release --example pg_bench -- \\\n  --maintenance-url postgres://postgres@127.0.0.1:5432/postgres --database sb_bench_1m \\\n  --messages 1000000 --out docs/benchmarks/postgres-1m.md\n```\n\n");
    md.push_str(
        "| read | median | p95 | statements | the main statement's plan: what it scans; its execution time |\n|---|---:|---:|---:|---|\n",
    );
    for (case, t, plans) in &report {
        md.push_str(&format!(
            "| {} | {:.2} ms | {:.2} ms | {} | {} |\n",
            case.name,
            t.median.as_secs_f64() * 1e3,
            t.p95.as_secs_f64() * 1e3,
            plans.len(),
            plans.last().map(|(_, plan)| summary(plan)).unwrap_or_default()
        ));
    }
    md.push_str(&format!(
        "| write: an inbound message to an existing thread | {:.2} ms | {:.2} ms | (a transaction) | |\n\n",
        ingest.median.as_secs_f64() * 1e3,
        ingest.p95.as_secs_f64() * 1e3
    ));
    md.push_str(&format!(
        "CPU per inbound message ({cpu_messages} in a row, {:.2} ms each on average): {:.0} µs in this process (the \
         store: pool, driver, plan, encoding; no HTTP) and {:.0} µs in the PostgreSQL backends serving it (from \
         `/proc/<pid>/stat`; WAL flushes by other processes not included).\n\n",
        wall.as_secs_f64() * 1e3 / cpu_messages as f64,
        per(own),
        per(server)
    ));
    md.push_str("## Plans\n");
    for (case, _, plans) in &report {
        md.push_str(&format!("\n### {}\n\n{}.\n", case.name, case.what));
        for (sql, plan) in plans {
            let sql: Vec<&str> = sql.split_whitespace().collect();
            md.push_str(&format!("\n```sql\n{}\n```\n```\n{plan}\n```\n", sql.join(" ")));
        }
    }
    match &args.out {
        Some(path) => std::fs::write(path, md)?,
        None => print!("{md}"),
    }
    Ok(())
}
