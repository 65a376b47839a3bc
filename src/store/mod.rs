//! Durable state: the directory, threads, messages, read state, preferences, subscriptions,
//! photos and the per-tenant event log.
//!
//! `Store` is the boundary handlers and sessions talk to; `embedded` implements it on SQLite
//! (the single-node default), `postgres` on PostgreSQL (one node, or several sharing the
//! database). Both run the same contract test suite (`tests/api` and `tests/api_postgres`).
//! Every mutating call is atomic — it commits everything or nothing — and appends the events
//! it causes to the tenant's log *and* hands them to the bus in the same step, so the order of
//! the log is the order of delivery. A call returns only once its change is durable.
//!
//! Unread counts: an `unread.count` event goes to exactly the users whose count its change
//! moved (`rules::count_route`, `rules::moved`). Its logged data is `{"delta": n}` when the
//! change moved every recipient's count by `n` (an inbound message, `rules::count_delta`),
//! else `{}`. Sessions add the delta to the count they hold and read it again only for `{}`
//! (see `session`); what they read is `session_start`, the count together with the log's head
//! it is exact as of.

pub use crate::domain::input::{AttachmentInput, FolderInput, InboundInput, LocationInput, PreferencesPatch};

pub mod embedded;
pub mod postgres;

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    domain::{
        FolderId, LocationId, MessageId, TenantId, ThreadId, UserId,
        model::{
            Folder, Ingested, Linked, Location, Me, Message, MessagePage, MessagePosition, Photo, Preferences,
            Resource, Thread, ThreadPage, ThreadPosition, User,
        },
    },
    event::Event,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A guarded reply refused: the thread's messages newer than the one the replier saw,
    /// oldest first (at most `NEWER_LIMIT`, the newest ones).
    #[error("the thread holds {} newer message(s)", .0.len())]
    ThreadChanged(Vec<crate::domain::model::Message>),
}

/// How many of a thread's newer messages a refused guarded reply carries back (the newest).
pub const NEWER_LIMIT: usize = 50;

impl StoreError {
    pub fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            detail: detail.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<crate::rules::plan::Refused> for StoreError {
    fn from(r: crate::rules::plan::Refused) -> StoreError {
        match r {
            crate::rules::plan::Refused::OtherLocation { .. } => StoreError::invalid("folder_id", r.to_string()),
            crate::rules::plan::Refused::NoFolder => StoreError::Conflict(r.to_string()),
            crate::rules::plan::Refused::ThreadChanged { newer } => StoreError::ThreadChanged(newer),
        }
    }
}

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
/// consistent read (one SQLite read transaction; one PostgreSQL REPEATABLE READ transaction),
/// so `unread_count` is the count exactly as of event `last_event_id` — it
/// includes every change logged up to it and none after.
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

/// Durable state. Every mutating call is atomic (all or nothing), returns once its change is
/// committed (durable: a 2xx means it survives a crash), appends the events it emits to the
/// tenant's log in the same transaction, in the order listed, and hands them to the bus after
/// the commit. Which events a change emits, to whom and with what payload is decided by its
/// plan in `crate::plan`, named on each method. No call changes another tenant's data.
///
/// Errors: `NotFound` for an unknown id named in the call, `Invalid` for a reference that does
/// not hold (the field is named), `Conflict` as documented per call, `Unavailable` when storage
/// does not answer (nothing was changed, or the change is all there: never a part).
/// Where a store hands each committed batch of events (the bus implements it): called right
/// after the commit, in log order, before the callers are answered. Must not block.
pub trait Publisher: Send + Sync + 'static {
    fn publish(&self, events: Vec<Event>);
}

#[async_trait]
pub trait Store: EventLog {
    // Directory (role `service`).

    /// Creates or replaces the location (its name and SMS numbers, duplicates dropped).
    /// `Conflict` when a number belongs to another location of the tenant. Emits nothing.
    async fn upsert_location(&self, tenant: &TenantId, id: &LocationId, input: LocationInput) -> StoreResult<Location>;
    /// Creates or renames the user. Emits nothing.
    async fn upsert_user(&self, tenant: &TenantId, id: &UserId, name: String) -> StoreResult<User>;
    /// Creates or replaces the folder; `Invalid("location_id")` for an unknown location.
    /// Emits `plan::upsert_folder`: an `unread.count` to the resources who joined or left the
    /// audience of its unread threads.
    async fn upsert_folder(&self, tenant: &TenantId, id: &FolderId, input: FolderInput) -> StoreResult<Folder>;
    /// The tenant's preferences (both on until set).
    async fn preferences(&self, tenant: &TenantId) -> StoreResult<Preferences>;
    /// Applies `patch` (a missing key keeps its value). Emits `plan::preference_counts`: an
    /// `unread.count` to the resources whose notification flipped on folders with unread
    /// threads.
    async fn set_preferences(&self, tenant: &TenantId, patch: PreferencesPatch) -> StoreResult<Preferences>;

    // Ingestion.

    /// Stores an inbound message (`plan::ingest`): the thread for (location of `to`, `from`)
    /// is created or moved on, auto-assigned, made unread. Emits `message.new` and
    /// `unread.count` (with the delta when every recipient's count moved by it). The same
    /// `external_id` again answers the stored message with `created: false` and emits
    /// nothing. `Invalid("to")` when `to` is no location's SMS number.
    async fn ingest(&self, tenant: &TenantId, input: InboundInput) -> StoreResult<Ingested>;

    // The Message Center.

    /// The caller's profile and unread count.
    async fn me(&self, scope: &Scope) -> StoreResult<Me>;
    /// The directory's name for a user, if it has one (presence shows it).
    async fn user_name(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<String>>;
    /// Turns the caller's `subscribe_all` on or off. Emits `plan::subscribe_all` when it
    /// changes: `subscription.changed` (the hubs move the user's sessions) and `unread.count`.
    async fn set_subscribe_all(&self, scope: &Scope, on: bool) -> StoreResult<Me>;
    /// The resources of folders at the scope's locations (the drop-down), by name.
    async fn resources(&self, scope: &Scope) -> StoreResult<Vec<Resource>>;
    /// A page of the thread list (`rules::listed` decides what is listed), newest first.
    async fn threads(&self, scope: &Scope, query: ThreadQuery) -> StoreResult<ThreadPage>;
    /// One thread, wherever it is (the caller checks the location).
    async fn thread(&self, tenant: &TenantId, id: &ThreadId) -> StoreResult<Thread>;
    /// A thread's messages, oldest first; none unless the thread is at one of the scope's
    /// locations.
    async fn thread_messages(&self, scope: &Scope, id: &ThreadId, paging: Paging) -> StoreResult<MessagePage>;
    /// Marks the thread read (`plan::read_state`): `thread.read` and `unread.count` to its
    /// audience, or nothing when it is read already.
    async fn mark_read(&self, tenant: &TenantId, id: &ThreadId, by: &UserId) -> StoreResult<Thread>;
    /// Marks the thread unread (`plan::read_state`): `thread.unread` and `unread.count`, or
    /// nothing when it is unread already.
    async fn mark_unread(&self, tenant: &TenantId, id: &ThreadId, by: &UserId) -> StoreResult<Thread>;
    /// Stores `by`'s reply (`plan::reply`): `message.sent` to the audience and the services;
    /// on an unread thread also `thread.read` and `unread.count`. With `after` (the newest
    /// message the replier saw), in the same transaction: `Invalid("after_message_id")` if it
    /// is not a message of this thread, `ThreadChanged` with the newer ones (nothing stored,
    /// no event) if the thread holds any.
    async fn reply(
        &self,
        tenant: &TenantId,
        id: &ThreadId,
        by: &UserId,
        body: String,
        after: Option<&MessageId>,
    ) -> StoreResult<Message>;
    /// Assigns the thread to `folder` (`plan::assign`): `NotFound` for either,
    /// `Invalid("folder_id")` for a folder of another location than the thread's; nothing for
    /// the folder it has; else `thread.assigned` to the old and new audience, and an
    /// `unread.count` to the resources who joined or left an unread thread's audience.
    async fn assign(&self, tenant: &TenantId, id: &ThreadId, folder: &FolderId, by: &UserId) -> StoreResult<Thread>;
    /// Folders at the scope's locations whose numbers contain `phone_digits` and whose name
    /// contains `text` (case-insensitively), by name, at most 200.
    async fn search_folders(
        &self,
        scope: &Scope,
        phone_digits: Option<String>,
        text: Option<String>,
    ) -> StoreResult<Vec<Folder>>;
    /// One folder, wherever it is (the caller checks the location).
    async fn folder(&self, tenant: &TenantId, id: &FolderId) -> StoreResult<Folder>;
    /// The messages of the threads assigned to the folder, oldest first: only of threads at
    /// the scope's locations, whatever the assignments say.
    async fn folder_messages(&self, scope: &Scope, id: &FolderId, paging: Paging) -> StoreResult<MessagePage>;
    /// One message, wherever it is (the caller checks its thread's location).
    async fn message(&self, tenant: &TenantId, id: &MessageId) -> StoreResult<Message>;
    /// Links the message's image attachments to its thread's folder (`plan::link_images`):
    /// `Conflict` when the thread has no folder; `images.linked` to the audience when any was
    /// new, nothing otherwise.
    async fn link_images(&self, tenant: &TenantId, message: &MessageId, by: &UserId) -> StoreResult<Linked>;
    /// The folder's linked photos: only of messages in threads at the scope's locations.
    async fn folder_photos(&self, scope: &Scope, id: &FolderId) -> StoreResult<Vec<Photo>>;

    // Sessions.

    /// The caller's `subscribe_all`, unread count and the log's head, in one snapshot: the
    /// count includes every change up to the head and none after (`SessionStart`).
    async fn session_start(&self, scope: &Scope) -> StoreResult<SessionStart>;

    /// Whether storage answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// The deployment's key for signing list cursors (`crate::cursor`): 32 random bytes,
    /// created once per deployment, atomically (the first caller's key wins, on any node),
    /// kept with the data so that every node of a cluster reads the same key and it survives
    /// restarts. Read once at start-up; never logged.
    async fn cursor_key(&self) -> StoreResult<[u8; 32]>;
}
