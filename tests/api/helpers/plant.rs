//! Writing straight into a hub's storage, behind its back: data the API would never produce,
//! for tests of what the hub does when it meets such data anyway (defence in depth).

use crate::helpers::{Backend, TENANT, TestApp};

fn sqlite(app: &TestApp) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(app.data_dir.path().join("switchboard.sqlite3")).expect("the hub's database");
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c
}

async fn postgres(app: &TestApp) -> tokio_postgres::Client {
    crate::helpers::postgres::connect(&app.settings.postgres.url).await
}

/// Puts thread `thread` on folder `folder`, whatever their locations.
pub async fn thread_on_folder(app: &TestApp, thread: &str, folder: &str) {
    match crate::BACKEND {
        Backend::Embedded => {
            let changed = sqlite(app)
                .execute(
                    "UPDATE threads SET folder_id = ?1 WHERE tenant = ?2 AND id = ?3",
                    [folder, TENANT, thread],
                )
                .unwrap();
            assert_eq!(changed, 1, "thread {thread} planted");
        }
        Backend::Postgres => {
            let changed = postgres(app)
                .await
                .execute(
                    "UPDATE threads SET folder_id = $1 WHERE tenant = $2 AND id = $3",
                    &[&folder, &TENANT, &thread],
                )
                .await
                .unwrap();
            assert_eq!(changed, 1, "thread {thread} planted");
        }
    }
}

/// Links attachment `attachment` of message `message` to folder `folder` as a photo.
pub async fn photo(app: &TestApp, folder: &str, message: &str, attachment: &str, url: &str) {
    match crate::BACKEND {
        Backend::Embedded => {
            sqlite(app)
                .execute(
                    "INSERT INTO photos (tenant, folder_id, attachment_id, message_id, url, linked_by, linked_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'planted', 0)",
                    [TENANT, folder, attachment, message, url],
                )
                .unwrap();
        }
        Backend::Postgres => {
            postgres(app)
                .await
                .execute(
                    "INSERT INTO photos (tenant, folder_id, attachment_id, message_id, url, linked_by, linked_at)
                     VALUES ($1, $2, $3, $4, $5, 'planted', 0)",
                    &[&TENANT, &folder, &attachment, &message, &url],
                )
                .await
                .unwrap();
        }
    }
}
