//! The Redis store's reads: lists, counts, snapshots and the event log. Nothing here writes.
//!
//! Thread lists and unread counts read through `gather.lua`, which returns the recency
//! indexes' members with their thread and folder records in one consistent read; the rules
//! (`crate::rules`) then decide what the caller sees, as in the embedded store. Messages and
//! photos are immutable once stored, so their reads need no snapshot.

use std::collections::{BTreeSet, HashMap};

use redis::{AsyncCommands, aio::ConnectionManager};

use super::{
    keys::{self, TenantKeys},
    records::{FolderRecord, MessageRecord, PhotoRecord, PrefsRecord, ThreadRecord, decode},
    unavailable,
};
use crate::{
    domain::{
        AttachmentId, FolderId, LocationId, MessageId, ThreadId, UserId,
        model::{
            Folder, Me, Message, MessagePage, MessagePosition, Photo, Preferences, Resource, Thread, ThreadPage,
            ThreadPosition,
        },
    },
    event::Event,
    rules::{self, Resources, Viewer},
    store::{Paging, Replay, Scope, SessionStart, StoreError, StoreResult, ThreadQuery},
};

/// Most folders a search answers (as the embedded store).
const SEARCH_LIMIT: usize = 200;
/// Most recency-index members one `gather` round reads per location.
const MAX_CHUNK: usize = 1000;

pub async fn preferences(conn: &mut ConnectionManager, k: &TenantKeys) -> StoreResult<Preferences> {
    let v: Option<String> = conn.get(k.preferences()).await.map_err(unavailable)?;
    parse_preferences(v.as_deref())
}

pub fn parse_preferences(v: Option<&str>) -> StoreResult<Preferences> {
    match v {
        None | Some("") => Ok(Preferences::default()),
        Some(t) => Ok(decode::<PrefsRecord>("preferences", t)?.into()),
    }
}

/// `HMGET` of `fields` (none: no call).
async fn hmget(conn: &mut ConnectionManager, key: &str, fields: &[&str]) -> StoreResult<Vec<Option<String>>> {
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    redis::cmd("HMGET")
        .arg(key)
        .arg(fields)
        .query_async(conn)
        .await
        .map_err(unavailable)
}

pub async fn load_message(conn: &mut ConnectionManager, k: &TenantKeys, id: &MessageId) -> StoreResult<Message> {
    let v: Option<String> = conn.hget(k.messages(), id.as_str()).await.map_err(unavailable)?;
    let text = v.ok_or(StoreError::NotFound("message"))?;
    Ok(decode::<MessageRecord>("message", &text)?.into_message(id))
}

/// Messages by id, in the order asked; a missing one is a storage fault (indexes and
/// records are written together).
async fn load_messages(conn: &mut ConnectionManager, k: &TenantKeys, ids: &[&str]) -> StoreResult<Vec<Message>> {
    let texts = hmget(conn, &k.messages(), ids).await?;
    ids.iter()
        .zip(texts)
        .map(|(id, text)| {
            let text = text.ok_or_else(|| StoreError::Unavailable(format!("message {id} is indexed but missing")))?;
            Ok(decode::<MessageRecord>("message", &text)?.into_message(&MessageId::trusted(*id)))
        })
        .collect()
}

pub async fn thread_record(conn: &mut ConnectionManager, k: &TenantKeys, id: &ThreadId) -> StoreResult<ThreadRecord> {
    let v: Option<String> = conn.hget(k.threads(), id.as_str()).await.map_err(unavailable)?;
    decode("thread", &v.ok_or(StoreError::NotFound("thread"))?)
}

pub async fn load_thread(conn: &mut ConnectionManager, k: &TenantKeys, id: &ThreadId) -> StoreResult<Thread> {
    let row = thread_record(conn, k, id).await?;
    full_thread(conn, k, id, row).await
}

/// A thread record with its last message.
pub async fn full_thread(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    id: &ThreadId,
    row: ThreadRecord,
) -> StoreResult<Thread> {
    let last = load_message(conn, k, &row.last_message_id).await?;
    Ok(row.into_thread(id, last))
}

pub async fn folder_record(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    id: &FolderId,
) -> StoreResult<Option<FolderRecord>> {
    let v: Option<String> = conn.hget(k.folders(), id.as_str()).await.map_err(unavailable)?;
    v.map(|t| decode("folder", &t)).transpose()
}

pub async fn load_folder(conn: &mut ConnectionManager, k: &TenantKeys, id: &FolderId) -> StoreResult<Folder> {
    Ok(folder_record(conn, k, id)
        .await?
        .ok_or(StoreError::NotFound("folder"))?
        .into_folder(id))
}

/// The scope's locations once each (a token may repeat one).
fn distinct(locations: &[LocationId]) -> Vec<&LocationId> {
    let mut seen = BTreeSet::new();
    locations.iter().filter(|l| seen.insert(*l)).collect()
}

/// Every folder at the scope's locations, by id.
async fn folders_in_scope(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    scope: &Scope,
) -> StoreResult<Vec<(FolderId, FolderRecord)>> {
    let locations = distinct(&scope.locations);
    let mut pipe = redis::pipe();
    for l in &locations {
        pipe.smembers(k.location_folders(l));
    }
    let sets: Vec<Vec<String>> = if locations.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await.map_err(unavailable)?
    };
    let ids: Vec<String> = sets
        .into_iter()
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let texts = hmget(conn, &k.folders(), &refs).await?;
    let mut out = Vec::with_capacity(ids.len());
    for (id, text) in ids.iter().zip(texts) {
        let Some(text) = text else { continue };
        let record: FolderRecord = decode("folder", &text)?;
        // The index follows a folder that moves; this keeps a race from showing one twice.
        if scope.locations.contains(&record.location_id) {
            out.push((FolderId::trusted(id.as_str()), record));
        }
    }
    Ok(out)
}

pub async fn search_folders(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    scope: &Scope,
    digits: Option<&str>,
    text: Option<&str>,
) -> StoreResult<Vec<Folder>> {
    // As SQL's LIKE in the embedded store: digits anywhere in a number; the name's text
    // case-insensitively for ASCII letters.
    let text = text.map(str::to_ascii_lowercase);
    let mut found: Vec<Folder> = folders_in_scope(conn, k, scope)
        .await?
        .into_iter()
        .filter(|(_, f)| digits.is_none_or(|d| f.phone_numbers.iter().any(|n| n.contains(d))))
        .filter(|(_, f)| text.as_deref().is_none_or(|t| f.name.to_ascii_lowercase().contains(t)))
        .map(|(id, f)| f.into_folder(&id))
        .collect();
    found.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    found.truncate(SEARCH_LIMIT);
    Ok(found)
}

pub async fn resources(conn: &mut ConnectionManager, k: &TenantKeys, scope: &Scope) -> StoreResult<Vec<Resource>> {
    let ids: BTreeSet<UserId> = folders_in_scope(conn, k, scope)
        .await?
        .into_iter()
        .flat_map(|(_, f)| [f.sales_resource_id, f.service_resource_id])
        .flatten()
        .collect();
    let ids: Vec<UserId> = ids.into_iter().collect();
    let refs: Vec<&str> = ids.iter().map(UserId::as_str).collect();
    let names = hmget(conn, &k.users(), &refs).await?;
    let mut out: Vec<Resource> = ids
        .into_iter()
        .zip(names)
        .map(|(user_id, name)| Resource { user_id, name })
        .collect();
    out.sort_by(|a, b| {
        let key = |r: &Resource| {
            (
                r.name.clone().unwrap_or_else(|| r.user_id.to_string()),
                r.user_id.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(out)
}

pub async fn folder_photos(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    scope: &Scope,
    id: &FolderId,
) -> StoreResult<Vec<Photo>> {
    load_folder(conn, k, id).await?;
    let all: Vec<(String, String)> = conn.hgetall(k.photos(id)).await.map_err(unavailable)?;
    let mut photos = all
        .into_iter()
        .map(|(a, text)| Ok(decode::<PhotoRecord>("photo", &text)?.into_photo(AttachmentId::trusted(a))))
        .collect::<StoreResult<Vec<Photo>>>()?;
    // Only photos of messages in threads at the scope's locations (see `folder_messages`).
    let message_ids: Vec<&str> = photos.iter().map(|p| p.message_id.as_str()).collect();
    let messages = load_messages(conn, k, &message_ids).await?;
    let thread_ids: Vec<&str> = messages.iter().map(|m| m.thread_id.as_str()).collect();
    let shown = threads_in_scope(conn, k, scope, &thread_ids).await?;
    let mut keep = messages.iter().map(|m| shown.contains(m.thread_id.as_str()));
    photos.retain(|_| keep.next().unwrap_or(false));
    sort_photos(&mut photos);
    Ok(photos)
}

/// Those of `threads` that are at one of the scope's locations.
async fn threads_in_scope<'a>(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    scope: &Scope,
    threads: &[&'a str],
) -> StoreResult<BTreeSet<&'a str>> {
    let records = hmget(conn, &k.threads(), threads).await?;
    let mut out = BTreeSet::new();
    for (id, text) in threads.iter().zip(records) {
        if let Some(text) = text
            && scope
                .locations
                .contains(&decode::<ThreadRecord>("thread", &text)?.location_id)
        {
            out.insert(*id);
        }
    }
    Ok(out)
}

/// Photos in the order every list of them has: when linked, then attachment id.
pub fn sort_photos(photos: &mut [Photo]) {
    photos.sort_by(|a, b| (a.linked_at, &a.attachment_id).cmp(&(b.linked_at, &b.attachment_id)));
}

// ---------------------------------------------------------------------------------------
// Messages, oldest first, a page at a time going back

/// A thread's messages: none unless it is at one of the scope's locations.
pub async fn thread_messages(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    scope: &Scope,
    id: &ThreadId,
    paging: &Paging,
) -> StoreResult<MessagePage> {
    let row = thread_record(conn, k, id).await?;
    let indexes = if scope.locations.contains(&row.location_id) {
        vec![k.thread_messages(id)]
    } else {
        Vec::new()
    };
    message_page(conn, k, indexes, paging).await
}

/// The messages of the folder's threads that are at the scope's locations, whatever the
/// assignments say (a thread is never on another location's folder, `rules::assignable`).
pub async fn folder_messages(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    scope: &Scope,
    id: &FolderId,
    paging: &Paging,
) -> StoreResult<MessagePage> {
    load_folder(conn, k, id).await?;
    let bound = message_bound(paging);
    let threads: Vec<String> = conn.smembers(k.folder_threads(id)).await.map_err(unavailable)?;
    let threads: Vec<&str> = threads.iter().map(String::as_str).collect();
    let indexes = threads_in_scope(conn, k, scope, &threads)
        .await?
        .into_iter()
        .map(|t| k.thread_messages(&ThreadId::trusted(t)))
        .collect();
    page_of(conn, k, indexes, &bound, paging.limit).await
}

/// The exclusive upper bound a message position stands for.
fn message_bound(paging: &Paging) -> String {
    match &paging.before {
        None => "+".into(),
        Some(b) => format!("({}", keys::message_bound(b.at, b.seq)),
    }
}

async fn message_page(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    indexes: Vec<String>,
    paging: &Paging,
) -> StoreResult<MessagePage> {
    let bound = message_bound(paging);
    page_of(conn, k, indexes, &bound, paging.limit).await
}

/// The newest `limit` messages below `bound` across `indexes`, oldest first.
async fn page_of(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    indexes: Vec<String>,
    bound: &str,
    limit: usize,
) -> StoreResult<MessagePage> {
    let mut members: Vec<String> = Vec::new();
    if !indexes.is_empty() {
        // Each index's newest `limit + 1` hold the merged newest `limit + 1`.
        let mut pipe = redis::pipe();
        for key in &indexes {
            pipe.cmd("ZREVRANGEBYLEX")
                .arg(key)
                .arg(bound)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(limit + 1);
        }
        let lists: Vec<Vec<String>> = pipe.query_async(conn).await.map_err(unavailable)?;
        members = lists.into_iter().flatten().collect();
    }
    members.sort_unstable_by(|a, b| b.cmp(a));
    members.truncate(limit + 1);
    let more = members.len() > limit;
    members.truncate(limit);
    let parsed = members
        .iter()
        .map(|m| {
            keys::parse_message_member(m)
                .ok_or_else(|| StoreError::Unavailable(format!("bad message index member {m}")))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let next = if more {
        parsed.last().map(|(at, seq, _)| MessagePosition { at: *at, seq: *seq })
    } else {
        None
    };
    let ids: Vec<&str> = parsed.iter().rev().map(|(_, _, id)| *id).collect();
    let messages = load_messages(conn, k, &ids).await?;
    Ok(MessagePage { messages, next })
}

// ---------------------------------------------------------------------------------------
// Thread lists and unread counts

/// One consistent read by `gather.lua`.
struct Gathered {
    head: u64,
    subscribe_all: bool,
    prefs: Preferences,
    /// Per index asked: its members below the bound, newest first, with the thread record.
    lists: Vec<Vec<(String, Option<ThreadRecord>)>>,
    folders: HashMap<FolderId, Resources>,
}

impl Gathered {
    fn notified(&self, row: &ThreadRecord) -> Vec<UserId> {
        let resources = row
            .folder_id
            .as_ref()
            .and_then(|f| self.folders.get(f))
            .cloned()
            .unwrap_or_default();
        rules::notified(&resources, self.prefs)
    }
}

async fn gather(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    user: &UserId,
    indexes: &[String],
    count: Option<usize>,
    bound: &str,
) -> StoreResult<Gathered> {
    let mut call = super::GATHER.prepare_invoke();
    call.key(k.seq())
        .key(k.subscribe_all())
        .key(k.preferences())
        .key(k.threads())
        .key(k.folders());
    for i in indexes {
        call.key(i);
    }
    call.arg(user.as_str()).arg(count.map_or(-1, |c| c as i64));
    for _ in indexes {
        call.arg(bound);
    }
    type Raw = (String, String, String, Vec<Vec<String>>, Vec<String>);
    let (head, sub, prefs, lists, folders): Raw = call.invoke_async(conn).await.map_err(unavailable)?;
    let lists = lists
        .into_iter()
        .map(|flat| {
            flat.chunks(2)
                .map(|pair| {
                    let record = match pair.get(1).map(String::as_str) {
                        None | Some("") => None,
                        Some(t) => Some(decode::<ThreadRecord>("thread", t)?),
                    };
                    Ok((pair[0].clone(), record))
                })
                .collect::<StoreResult<Vec<_>>>()
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let folders = folders
        .chunks(2)
        .filter(|pair| pair.len() == 2 && !pair[1].is_empty())
        .map(|pair| {
            let f: FolderRecord = decode("folder", &pair[1])?;
            Ok((FolderId::trusted(pair[0].as_str()), f.resources()))
        })
        .collect::<StoreResult<HashMap<_, _>>>()?;
    Ok(Gathered {
        head: head
            .parse()
            .map_err(|_| StoreError::Unavailable(format!("bad event sequence {head:?}")))?,
        subscribe_all: !sub.is_empty(),
        prefs: parse_preferences(Some(&prefs))?,
        lists,
        folders,
    })
}

pub async fn threads(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    scope: &Scope,
    q: &ThreadQuery,
) -> StoreResult<ThreadPage> {
    let indexes: Vec<String> = distinct(&scope.locations)
        .into_iter()
        .map(|l| {
            if q.unread_only {
                k.location_unread(l)
            } else {
                k.location_threads(l)
            }
        })
        .collect();
    let mut bound = match &q.before {
        None => "+".to_owned(),
        Some(c) => format!("({}", keys::recency_member(c.at, c.id.as_str())),
    };
    let mut page: Vec<(ThreadId, ThreadRecord)> = Vec::new();
    let mut more = false;
    let mut chunk = (q.limit + 1).max(16);
    'rounds: while !indexes.is_empty() {
        let g = gather(conn, k, &scope.user, &indexes, Some(chunk), &bound).await?;
        let viewer = Viewer {
            user: &scope.user,
            locations: &scope.locations,
            subscribe_all: g.subscribe_all,
        };
        // Members at or above every unfinished index's last one are in their final order;
        // below that, an index may still hold newer ones than we have seen.
        let watermark = g
            .lists
            .iter()
            .filter(|l| l.len() == chunk)
            .filter_map(|l| l.last().map(|(m, _)| m.clone()))
            .max();
        let mut candidates: Vec<&(String, Option<ThreadRecord>)> = g.lists.iter().flatten().collect();
        candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        for (member, row) in candidates {
            if watermark.as_ref().is_some_and(|w| member < w) {
                break;
            }
            bound = format!("({member}");
            let (Some(row), Some((_, id))) = (row, keys::parse_recency_member(member)) else {
                continue;
            };
            let notified = g.notified(row);
            let shown = rules::listed(&viewer, q.view.resource(), &row.location_id, &notified);
            if shown {
                if page.len() == q.limit {
                    more = true;
                    break 'rounds;
                }
                page.push((ThreadId::trusted(id), row.clone()));
            }
        }
        if watermark.is_none() {
            break;
        }
        chunk = (chunk * 2).min(MAX_CHUNK);
    }
    let next = if more {
        page.last().map(|(id, row)| ThreadPosition {
            at: row.last_message_at,
            id: id.clone(),
        })
    } else {
        None
    };
    let last_ids: Vec<&str> = page.iter().map(|(_, row)| row.last_message_id.as_str()).collect();
    let lasts = load_messages(conn, k, &last_ids).await?;
    let threads = page
        .into_iter()
        .zip(lasts)
        .map(|((id, row), last)| row.into_thread(&id, last))
        .collect();
    Ok(ThreadPage { threads, next })
}

/// The scope's unread count, its `subscribe_all` and the log's head, read together.
async fn count_snapshot(conn: &mut ConnectionManager, k: &TenantKeys, scope: &Scope) -> StoreResult<SessionStart> {
    let indexes: Vec<String> = distinct(&scope.locations)
        .into_iter()
        .map(|l| k.location_unread(l))
        .collect();
    let g = gather(conn, k, &scope.user, &indexes, None, "+").await?;
    let viewer = Viewer {
        user: &scope.user,
        locations: &scope.locations,
        subscribe_all: g.subscribe_all,
    };
    let rows: Vec<(&ThreadRecord, Vec<UserId>)> = g
        .lists
        .iter()
        .flatten()
        .filter_map(|(_, row)| row.as_ref())
        .map(|row| (row, g.notified(row)))
        .collect();
    let unread_count = rules::unread_total(
        &viewer,
        rows.iter()
            .map(|(row, notified)| (&row.location_id, &notified[..], row.unread_count)),
    );
    Ok(SessionStart {
        subscribe_all: g.subscribe_all,
        unread_count,
        last_event_id: g.head,
    })
}

pub async fn unread_count(conn: &mut ConnectionManager, k: &TenantKeys, scope: &Scope) -> StoreResult<u64> {
    Ok(count_snapshot(conn, k, scope).await?.unread_count)
}

pub async fn session_start(conn: &mut ConnectionManager, k: &TenantKeys, scope: &Scope) -> StoreResult<SessionStart> {
    // One script, which Redis runs whole: the count and the log head describe the same moment
    // (a commit script writes the records and the events together). The sessions' counts rest
    // on this (see `SessionStart`).
    count_snapshot(conn, k, scope).await
}

pub async fn me(conn: &mut ConnectionManager, k: &TenantKeys, scope: &Scope) -> StoreResult<Me> {
    let name: Option<String> = conn.hget(k.users(), scope.user.as_str()).await.map_err(unavailable)?;
    let snapshot = count_snapshot(conn, k, scope).await?;
    Ok(Me {
        user_id: scope.user.clone(),
        tenant: k.tenant().clone(),
        name,
        locations: scope.locations.to_vec(),
        subscribe_all: snapshot.subscribe_all,
        unread_count: snapshot.unread_count,
    })
}

// ---------------------------------------------------------------------------------------
// The event log

pub async fn events_after(
    conn: &mut ConnectionManager,
    k: &TenantKeys,
    after: u64,
    limit: usize,
) -> StoreResult<Replay> {
    // MULTI/EXEC: the head, the oldest retained id and the events after `after` agree.
    let (head, oldest, events): (Option<u64>, Vec<(String, f64)>, Vec<String>) = redis::pipe()
        .atomic()
        .get(k.seq())
        .zrange_withscores(k.log(), 0, 0)
        .cmd("ZRANGEBYSCORE")
        .arg(k.log())
        .arg(format!("({after}"))
        .arg("+inf")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    let head = head.unwrap_or(0);
    if after > head || head - after > limit as u64 {
        return Ok(Replay::TooOld);
    }
    if after == head {
        return Ok(Replay::Events(Vec::new()));
    }
    if oldest.first().is_none_or(|(_, o)| *o as u64 > after + 1) {
        return Ok(Replay::TooOld);
    }
    let events = events
        .iter()
        .map(|text| {
            Event::from_wire(k.tenant(), text)
                .ok_or_else(|| StoreError::Unavailable("an unreadable event in the log".into()))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Replay::Events(events))
}
