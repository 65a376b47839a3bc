//! Creating or upgrading the schema at start: refinery applies `migrations/postgres/V*.sql`
//! (compiled in) that the database has not seen, each in its own transaction, and records
//! them in `MIGRATIONS_TABLE` with a checksum (an applied migration that was edited since, or
//! one missing from this build, stops the start).
//!
//! Several nodes may start at once against one database. refinery itself does not guard
//! against that (two nodes would both find a migration unapplied and both run it), so the
//! whole run holds a session-level advisory lock (`pg_advisory_lock`, scoped to the
//! database): the first node applies, the others wait for it, then find nothing left to do.
//! A node that dies holding the lock loses it with its connection. The wait is bounded by
//! `lock_timeout`: a start never hangs for good behind a stuck one.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// Where applied migrations are recorded.
pub const MIGRATIONS_TABLE: &str = "switchboard_migrations";

/// The advisory lock key of the migration run ("SWBDMIGR" in ASCII): one per database.
const LOCK_KEY: i64 = 0x5357_4244_4d49_4752;

/// Applies every pending migration, waiting up to `wait` for another node's run.
pub(super) async fn run(config: &tokio_postgres::Config, wait: Duration) -> anyhow::Result<()> {
    let (mut client, connection) = config.connect(NoTls).await.context("connecting")?;
    let driver = tokio::spawn(connection);
    let result = async {
        client
            .batch_execute(&format!("SET lock_timeout = {}", wait.as_millis()))
            .await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
            .await
            .context("waiting for another node's migration")?;
        let report = embedded::migrations::runner()
            .set_migration_table_name(MIGRATIONS_TABLE)
            .run_async(&mut client)
            .await
            .context("applying migrations")?;
        for m in report.applied_migrations() {
            tracing::info!(migration = %m, "applied");
        }
        client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await?;
        anyhow::Ok(())
    }
    .await;
    // Closing the connection releases the lock if the run failed half way.
    drop(client);
    let _ = driver.await;
    result
}
