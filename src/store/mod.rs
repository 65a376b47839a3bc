//! Durable state: the directory, threads, messages, read state, preferences, subscriptions,
//! photos and the per-tenant event log.
//!
//! `Store` is the boundary handlers and sessions talk to; `embedded` implements it on SQLite
//! (the single-node default), `postgres` on PostgreSQL (one node, or several sharing the
//! database) and `redis` on Redis (cluster mode, being retired). All run the same contract
//! test suite (`tests/api`, `tests/api_postgres` and `tests/api_redis`). Every mutating call is atomic — it commits everything or
//! nothing — and appends the events it causes to the tenant's log *and* hands them to the bus
//! in the same step, so the order of the log is the order of delivery. A call returns only
//! once its change is durable.
//!
//! Unread counts: an `unread.count` event goes to exactly the users whose count its change
//! moved (`rules::count_route`, `rules::moved`). Its logged data is `{"delta": n}` when the
//! change moved every recipient's count by `n` (an inbound message, `rules::count_delta`),
//! else `{}`. Sessions add the delta to the count they hold and read it again only for `{}`
//! (see `session`); what they read is `session_start`, the count together with the log's head
//! it is exact as of.

pub mod embedded;
pub mod postgres;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    domain::{
        AttachmentUrl, FolderId, LocationId, MediaType, MessageId, PhoneNumber, TenantId, ThreadId, UserId,
        model::{
            Folder, Ingested, Linked, Location, Me, Message, MessagePage, MessagePosition, Photo, Preferences,
            Resource, Thread, ThreadPage, ThreadPosition, Timestamp, User,
        },
    },
    event::Event,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            detail: detail.into(),
        }
    }

    /// A folder at `folder` offered to a thread at `thread` (`rules::assignable` said no).
    pub fn not_assignable(thread: &LocationId, folder: &LocationId) -> Self {
        StoreError::invalid(
            "folder_id",
            format!(
                "the folder is at location {folder}, the thread at {thread}: a thread takes a folder of its own location"
            ),
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// 32 bytes from the operating system's CSPRNG: a candidate for `Store::cursor_key` (the
/// store keeps it only if no key exists yet).
pub(crate) fn new_key() -> StoreResult<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| StoreError::Unavailable(format!("no randomness for a new key: {e}")))?;
    Ok(key)
}

/// Who is asking: a user with the locations their token grants.
#[derive(Debug, Clone)]
pub struct Scope {
    pub tenant: TenantId,
    pub user: UserId,
    pub locations: Arc<[LocationId]>,
}

#[derive(Debug, Clone)]
pub struct LocationInput {
    pub name: String,
    pub sms_numbers: Vec<PhoneNumber>,
}

#[derive(Debug, Clone)]
pub struct FolderInput {
    pub name: String,
    pub location_id: LocationId,
    pub phone_numbers: Vec<PhoneNumber>,
    pub sales_resource_id: Option<UserId>,
    pub service_resource_id: Option<UserId>,
}

/// A partial preferences update: `None` keeps the current value.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreferencesPatch {
    pub notify_sales_resource: Option<bool>,
    pub notify_service_resource: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct AttachmentInput {
    pub url: AttachmentUrl,
    pub content_type: MediaType,
}

#[derive(Debug, Clone)]
pub struct InboundInput {
    pub external_id: String,
    pub from: PhoneNumber,
    pub to: PhoneNumber,
    pub body: String,
    pub attachments: Vec<AttachmentInput>,
    pub received_at: Option<Timestamp>,
}

/// Which threads a list shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadView {
    /// The caller's audience.
    Mine,
    /// The drop-down: threads where this user is a notified resource.
    Resource(UserId),
}

impl ThreadView {
    /// The resource whose view this is, if any (`rules::listed` takes it).
    pub fn resource(&self) -> Option<&UserId> {
        match self {
            ThreadView::Mine => None,
            ThreadView::Resource(u) => Some(u),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ThreadQuery {
    pub view: ThreadView,
    pub unread_only: bool,
    pub limit: usize,
    /// Only threads strictly past this position (from a verified cursor).
    pub before: Option<ThreadPosition>,
}

/// A page of messages: at most `limit`, strictly before `before` (from a verified cursor).
#[derive(Debug, Clone)]
pub struct Paging {
    pub limit: usize,
    pub before: Option<MessagePosition>,
}

/// What `resume` gets from the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// Every event after the requested id, oldest first (all kinds; the caller filters).
    Events(Vec<Event>),
    /// The log no longer reaches back that far, or the id is not one of ours.
    TooOld,
}

/// A snapshot taken when a session opens, and whenever it reads its count again: one
/// consistent read (one SQLite read transaction; one Redis script), so `unread_count` is the
/// count exactly as of event `last_event_id` — it includes every change logged up to it and
/// none after.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionStart {
    pub subscribe_all: bool,
    pub unread_count: u64,
    /// The newest event of the tenant's log (0 when there is none).
    pub last_event_id: u64,
}

/// The per-tenant event log, as the bus and the session's `resume` read it: the narrow part of
/// storage that delivery needs (every `Store` is one).
///
/// Ids are per tenant, from 1, in commit order: an event is appended in the same transaction
/// as the change it describes, so a reader never sees an id before the ids below it. The log
/// keeps the newest `events.retention` events of each tenant.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The id of the tenant's newest event (0 when it has none).
    async fn head(&self, tenant: &TenantId) -> StoreResult<u64>;

    /// The heads of several tenants in one read, in the order asked (the bus checks every
    /// tenant it delivers this way, at most once a second).
    async fn heads(&self, tenants: &[TenantId]) -> StoreResult<Vec<u64>> {
        let mut out = Vec::with_capacity(tenants.len());
        for t in tenants {
            out.push(self.head(t).await?);
        }
        Ok(out)
    }

    /// Every event of `tenant` after `after`, oldest first; `TooOld` when the log no longer
    /// holds the event after `after`, when `after` is past the head, or when more than `limit`
    /// events follow it (so a read is never more than `limit` events).
    async fn events_after(&self, tenant: &TenantId, after: u64, limit: usize) -> StoreResult<Replay>;
}

#[async_trait]
pub trait Store: EventLog {
    // Directory (role `service`).
    async fn upsert_location(&self, tenant: &TenantId, id: &LocationId, input: LocationInput) -> StoreResult<Location>;
    async fn upsert_user(&self, tenant: &TenantId, id: &UserId, name: String) -> StoreResult<User>;
    async fn upsert_folder(&self, tenant: &TenantId, id: &FolderId, input: FolderInput) -> StoreResult<Folder>;
    async fn preferences(&self, tenant: &TenantId) -> StoreResult<Preferences>;
    async fn set_preferences(&self, tenant: &TenantId, patch: PreferencesPatch) -> StoreResult<Preferences>;

    // Ingestion.
    async fn ingest(&self, tenant: &TenantId, input: InboundInput) -> StoreResult<Ingested>;

    // The Message Center.
    async fn me(&self, scope: &Scope) -> StoreResult<Me>;
    async fn set_subscribe_all(&self, scope: &Scope, on: bool) -> StoreResult<Me>;
    async fn resources(&self, scope: &Scope) -> StoreResult<Vec<Resource>>;
    async fn threads(&self, scope: &Scope, query: ThreadQuery) -> StoreResult<ThreadPage>;
    async fn thread(&self, tenant: &TenantId, id: &ThreadId) -> StoreResult<Thread>;
    /// A thread's messages, oldest first; none unless the thread is at one of the scope's
    /// locations.
    async fn thread_messages(&self, scope: &Scope, id: &ThreadId, paging: Paging) -> StoreResult<MessagePage>;
    async fn mark_read(&self, tenant: &TenantId, id: &ThreadId, by: &UserId) -> StoreResult<Thread>;
    async fn mark_unread(&self, tenant: &TenantId, id: &ThreadId, by: &UserId) -> StoreResult<Thread>;
    async fn reply(&self, tenant: &TenantId, id: &ThreadId, by: &UserId, body: String) -> StoreResult<Message>;
    /// Assigns the thread to `folder`: `NotFound` for either, `Invalid("folder_id")` for a
    /// folder of another location than the thread's (`rules::assignable`).
    async fn assign(&self, tenant: &TenantId, id: &ThreadId, folder: &FolderId, by: &UserId) -> StoreResult<Thread>;
    async fn search_folders(
        &self,
        scope: &Scope,
        phone_digits: Option<String>,
        text: Option<String>,
    ) -> StoreResult<Vec<Folder>>;
    async fn folder(&self, tenant: &TenantId, id: &FolderId) -> StoreResult<Folder>;
    /// The messages of the threads assigned to the folder, oldest first: only of threads at
    /// the scope's locations, whatever the assignments say.
    async fn folder_messages(&self, scope: &Scope, id: &FolderId, paging: Paging) -> StoreResult<MessagePage>;
    async fn message(&self, tenant: &TenantId, id: &MessageId) -> StoreResult<Message>;
    async fn link_images(&self, tenant: &TenantId, message: &MessageId, by: &UserId) -> StoreResult<Linked>;
    /// The folder's linked photos: only of messages in threads at the scope's locations.
    async fn folder_photos(&self, scope: &Scope, id: &FolderId) -> StoreResult<Vec<Photo>>;

    // Sessions.
    async fn session_start(&self, scope: &Scope) -> StoreResult<SessionStart>;
    /// The count alone, without the head it is exact as of (sessions read `session_start`).
    async fn unread_count(&self, scope: &Scope) -> StoreResult<u64>;

    /// Whether storage answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// The deployment's key for signing list cursors (`crate::cursor`): 32 random bytes,
    /// created once per deployment, atomically (the first caller's key wins, on any node),
    /// kept with the data so that every node of a cluster reads the same key and it survives
    /// restarts. Read once at start-up; never logged.
    async fn cursor_key(&self) -> StoreResult<[u8; 32]>;
}
