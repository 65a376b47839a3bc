//! A database of its own for each test, on the machine's PostgreSQL (127.0.0.1:5432, user
//! `postgres`, trust; `SWITCHBOARD_TEST_POSTGRES` names another maintenance URL).
//!
//! `fresh_database()` creates `sb_test_<pid>_<n>` through a maintenance connection and
//! returns a guard that drops it (`WITH (FORCE)`, cutting the hub's connections) when the test
//! is over. A test process that dies leaves its databases behind: the first database made by
//! a later run drops every `sb_test_<pid>_…` whose process is gone. Other runs' databases, on
//! the same server at the same time, are left alone.

use std::sync::{
    Mutex, Once,
    atomic::{AtomicU32, Ordering},
};

use tokio_postgres::NoTls;

/// The maintenance database's URL.
pub fn maintenance_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The URL of database `name` on the same server as the maintenance database.
pub fn url_of(name: &str) -> String {
    let base = maintenance_url();
    let (head, query) = base
        .split_once('?')
        .map_or((base.as_str(), None), |(h, q)| (h, Some(q)));
    let server = head.rsplit_once('/').map_or(head, |(server, _)| server);
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// Runs maintenance statements on a thread of its own (callers may be inside a runtime, in a
/// `Drop` or in sync code).
fn maintenance(statements: Vec<String>) -> Result<Vec<Vec<String>>, String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&maintenance_url(), NoTls)
                .await
                .map_err(|e| format!("the test PostgreSQL at {}: {e}", maintenance_url()))?;
            let driver = tokio::spawn(conn);
            let mut out = Vec::new();
            for s in statements {
                let rows = client.simple_query(&s).await.map_err(|e| format!("{s}: {e}"))?;
                out.push(
                    rows.into_iter()
                        .filter_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                            _ => None,
                        })
                        .collect(),
                );
            }
            drop(client);
            let _ = driver.await;
            Ok(out)
        })
    })
    .join()
    .map_err(|_| "the maintenance thread panicked".to_string())?
}

/// Drops the databases of earlier test processes that are gone.
fn sweep() {
    let Ok(found) = maintenance(vec![
        "SELECT datname FROM pg_database WHERE datname LIKE 'sb\\_test\\_%'".into(),
    ]) else {
        return;
    };
    let stale: Vec<String> = found[0]
        .iter()
        .filter(|name| {
            let pid = name.trim_start_matches("sb_test_").split('_').next().unwrap_or("");
            !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
        .map(|name| format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .collect();
    if !stale.is_empty() {
        let _ = maintenance(stale);
    }
}

/// A test's own database, dropped with the guard.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

/// Creates a new empty database for one test.
pub fn fresh_database() -> TestDatabase {
    static SWEPT: Once = Once::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    SWEPT.call_once(sweep);
    let name = format!(
        "sb_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    maintenance(vec![format!("CREATE DATABASE \"{name}\"")]).expect("the test PostgreSQL creates a database");
    TestDatabase {
        url: url_of(&name),
        name,
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = maintenance(vec![format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)]);
    }
}

/// Databases made by `test_settings`, until `start` hands each to its hub (keyed by URL).
static MADE: Mutex<Vec<TestDatabase>> = Mutex::new(Vec::new());

/// Makes a database for settings and keeps its guard until `claim`.
pub fn database_for_settings() -> String {
    let db = fresh_database();
    let url = db.url.clone();
    MADE.lock().unwrap_or_else(|e| e.into_inner()).push(db);
    url
}

/// The guard of the database made for `url` by `database_for_settings`, if it is unclaimed.
pub fn claim(url: &str) -> Option<TestDatabase> {
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let i = made.iter().position(|d| d.url == url)?;
    Some(made.swap_remove(i))
}

/// A raw connection to a test database (for planting data and looking at it).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("the test database");
    tokio::spawn(conn);
    client
}
