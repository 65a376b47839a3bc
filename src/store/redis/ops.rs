//! The Redis store's mutating calls, one attempt each: read through the `Tx` (which guards
//! what was read), decide with `crate::rules` exactly as the embedded store's `ops` does,
//! and stage the writes and events for `Tx::commit`. `RedisStore::transact` runs an attempt
//! again when the commit finds that something read has changed.
//!
//! Each function mirrors its namesake in `store::embedded::ops`: same checks in the same
//! order (so the same error wins), same events with the same routes and data, in the same
//! order.

use std::collections::BTreeSet;

use redis::AsyncCommands;
use serde_json::json;

use super::{
    keys::{self, thread_key_field},
    reads,
    records::{FolderRecord, LocationRecord, MessageRecord, PhotoRecord, PrefsRecord, ThreadRecord, decode, encode},
    tx::Tx,
    unavailable,
};
use crate::{
    domain::{
        AttachmentId, FolderId, LocationId, MessageId, PhoneNumber, ThreadId, UserId,
        model::{
            Attachment, Direction, Folder, Ingested, Linked, Location, Message, Preferences, Thread, Timestamp, User,
        },
    },
    event::{self, EventKind, NewEvent, Route},
    rules::{self, ReadChange, Resources},
    store::{FolderInput, InboundInput, LocationInput, PreferencesPatch, Scope, StoreError, StoreResult},
};

fn dedup(numbers: Vec<PhoneNumber>) -> Vec<PhoneNumber> {
    let mut seen = BTreeSet::new();
    numbers.into_iter().filter(|n| seen.insert(n.clone())).collect()
}

fn strings(numbers: &[PhoneNumber]) -> Vec<String> {
    numbers.iter().map(|n| n.as_str().to_owned()).collect()
}

// ---------------------------------------------------------------------------------------
// Guarded reads shared by the calls below

async fn prefs(tx: &mut Tx) -> StoreResult<Preferences> {
    let key = tx.keys.preferences();
    reads::parse_preferences(tx.get(&key).await?.as_deref())
}

async fn folder_record(tx: &mut Tx, id: &FolderId) -> StoreResult<Option<FolderRecord>> {
    let key = tx.keys.folders();
    tx.hget(&key, id.as_str())
        .await?
        .map(|t| decode("folder", &t))
        .transpose()
}

async fn thread_record(tx: &mut Tx, id: &ThreadId) -> StoreResult<ThreadRecord> {
    let key = tx.keys.threads();
    let text = tx.hget(&key, id.as_str()).await?;
    decode("thread", &text.ok_or(StoreError::NotFound("thread"))?)
}

/// The route of events about a thread at `location` on `folder`.
async fn route_for(tx: &mut Tx, location: &LocationId, folder: Option<&FolderId>) -> StoreResult<Route> {
    let resources = match folder {
        Some(f) => folder_record(tx, f).await?.map(|r| r.resources()).unwrap_or_default(),
        None => Resources::default(),
    };
    let notified = rules::notified(&resources, prefs(tx).await?);
    Ok(rules::thread_route(location, &notified))
}

/// A thread with its last message (messages never change, so this read needs no guard).
async fn full_thread(tx: &mut Tx, id: &ThreadId, row: ThreadRecord) -> StoreResult<Thread> {
    reads::full_thread(&mut tx.conn, &tx.keys, id, row).await
}

/// The next value of the tenant's message counter. Taken outside the commit: a number lost
/// to a retried attempt leaves a harmless gap.
async fn next_message_seq(tx: &mut Tx) -> StoreResult<i64> {
    let key = tx.keys.message_seq();
    tx.conn.incr(key, 1).await.map_err(unavailable)
}

// ---------------------------------------------------------------------------------------
// Staged writes that keep the indexes in step with the records

/// Stores a thread and moves it in every index its change touches.
fn save_thread(tx: &mut Tx, id: &ThreadId, old: Option<&ThreadRecord>, new: &ThreadRecord) {
    let k = tx.keys.clone();
    tx.hset(&k.threads(), id.as_str(), &encode(new));
    let member = |r: &ThreadRecord| keys::recency_member(r.last_message_at, id.as_str());
    let new_member = member(new);
    let old_member = old.map(member);
    if old_member.as_ref() != Some(&new_member) {
        let index = k.location_threads(&new.location_id);
        if let Some(m) = &old_member {
            tx.zrem(&index, m);
        }
        tx.zadd(&index, &new_member);
    }
    let unread_member = |r: &ThreadRecord| (r.unread_count > 0).then(|| member(r));
    let (old_unread, new_unread) = (old.and_then(unread_member), unread_member(new));
    if old_unread != new_unread {
        let index = k.location_unread(&new.location_id);
        if let Some(m) = &old_unread {
            tx.zrem(&index, m);
        }
        if let Some(m) = &new_unread {
            tx.zadd(&index, m);
        }
    }
    let old_folder = old.and_then(|o| o.folder_id.as_ref());
    if old_folder != new.folder_id.as_ref() {
        if let Some(f) = old_folder {
            tx.srem(&k.folder_threads(f), id.as_str());
        }
        if let Some(f) = &new.folder_id {
            tx.sadd(&k.folder_threads(f), id.as_str());
        }
    }
    // `funread` counts each folder's unread threads (for directory changes that move counts).
    let unread_on = |r: &ThreadRecord| r.folder_id.clone().filter(|_| r.unread_count > 0);
    let (was, is) = (old.and_then(unread_on), unread_on(new));
    if was != is {
        if let Some(f) = &was {
            tx.zincr(&k.unread_folders(), f.as_str(), -1);
        }
        if let Some(f) = &is {
            tx.zincr(&k.unread_folders(), f.as_str(), 1);
        }
    }
}

fn insert_message(tx: &mut Tx, m: &Message, seq: i64) {
    let k = tx.keys.clone();
    tx.hset(&k.messages(), m.id.as_str(), &encode(&MessageRecord::of(m, seq)));
    tx.zadd(
        &k.thread_messages(&m.thread_id),
        &keys::message_member(m.created_at.micros(), seq, m.id.as_str()),
    );
    if let Some(ext) = &m.external_id {
        tx.hset(&k.external_ids(), ext, m.id.as_str());
    }
}

// ---------------------------------------------------------------------------------------
// Directory

pub async fn upsert_location(tx: &mut Tx, id: &LocationId, input: &LocationInput) -> StoreResult<Location> {
    let k = tx.keys.clone();
    let numbers = dedup(input.sms_numbers.clone());
    let old: Option<LocationRecord> = tx
        .hget(&k.locations(), id.as_str())
        .await?
        .map(|t| decode("location", &t))
        .transpose()?;
    for n in &numbers {
        if let Some(other) = tx
            .hget(&k.location_numbers(), n.as_str())
            .await?
            .filter(|h| h != id.as_str())
        {
            return Err(StoreError::Conflict(format!(
                "sms number {n} belongs to location {other}"
            )));
        }
    }
    let record = LocationRecord {
        name: input.name.clone(),
        sms_numbers: strings(&numbers),
    };
    tx.hset(&k.locations(), id.as_str(), &encode(&record));
    for gone in old.iter().flat_map(|o| o.numbers()).filter(|n| !numbers.contains(n)) {
        tx.hdel(&k.location_numbers(), gone.as_str());
    }
    for n in &numbers {
        tx.hset(&k.location_numbers(), n.as_str(), id.as_str());
    }
    Ok(record.into_location(id))
}

pub async fn upsert_user(tx: &mut Tx, id: &UserId, name: &str) -> StoreResult<User> {
    let key = tx.keys.users();
    tx.hset(&key, id.as_str(), name);
    Ok(User {
        id: id.clone(),
        name: name.to_owned(),
    })
}

pub async fn upsert_folder(tx: &mut Tx, id: &FolderId, input: &FolderInput) -> StoreResult<Folder> {
    let k = tx.keys.clone();
    if tx.hget(&k.locations(), input.location_id.as_str()).await?.is_none() {
        return Err(StoreError::invalid(
            "location_id",
            format!("unknown location {}", input.location_id),
        ));
    }
    let before = folder_record(tx, id).await?;
    let numbers = dedup(input.phone_numbers.clone());
    let record = FolderRecord {
        name: input.name.clone(),
        location_id: input.location_id.clone(),
        phone_numbers: strings(&numbers),
        sales_resource_id: input.sales_resource_id.clone(),
        service_resource_id: input.service_resource_id.clone(),
    };
    tx.hset(&k.folders(), id.as_str(), &encode(&record));
    if let Some(b) = before.as_ref().filter(|b| b.location_id != record.location_id) {
        tx.srem(&k.location_folders(&b.location_id), id.as_str());
    }
    tx.sadd(&k.location_folders(&record.location_id), id.as_str());
    for gone in before.iter().flat_map(|b| b.numbers()).filter(|n| !numbers.contains(n)) {
        tx.srem(&k.number_folders(&gone), id.as_str());
    }
    for n in &numbers {
        tx.sadd(&k.number_folders(n), id.as_str());
    }
    let after = record.resources();
    let before = before.map(|b| b.resources());
    if before.as_ref().is_some_and(|b| *b != after) && tx.zhas(&k.unread_folders(), id.as_str()).await? {
        // Threads on this folder changed audience: the counts of those who joined or left move.
        let prefs = prefs(tx).await?;
        let before = rules::notified(before.as_ref().unwrap_or(&Resources::default()), prefs);
        let users = rules::moved(&before, &rules::notified(&after, prefs));
        if !users.is_empty() {
            let route = Route {
                users,
                ..Route::default()
            };
            tx.emit(NewEvent::new(EventKind::UnreadCount, route, json!({})));
        }
    }
    Ok(record.into_folder(id))
}

pub async fn set_preferences(tx: &mut Tx, patch: PreferencesPatch) -> StoreResult<Preferences> {
    let k = tx.keys.clone();
    let before = prefs(tx).await?;
    let after = Preferences {
        notify_sales_resource: patch.notify_sales_resource.unwrap_or(before.notify_sales_resource),
        notify_service_resource: patch.notify_service_resource.unwrap_or(before.notify_service_resource),
    };
    tx.set(&k.preferences(), &encode(&PrefsRecord::from(after)));
    if after != before {
        // Resources of folders with unread threads whose notification flipped: their counts move.
        let mut resources: Vec<Resources> = Vec::new();
        for f in tx.zmembers(&k.unread_folders()).await? {
            if let Some(r) = folder_record(tx, &FolderId::trusted(f)).await?.map(|r| r.resources()) {
                if !resources.contains(&r) {
                    resources.push(r);
                }
            }
        }
        let users = rules::moved_by_preferences(&resources, before, after);
        if !users.is_empty() {
            let route = Route {
                users,
                ..Route::default()
            };
            tx.emit(NewEvent::new(EventKind::UnreadCount, route, json!({})));
        }
    }
    Ok(after)
}

// ---------------------------------------------------------------------------------------
// Threads and messages

pub async fn ingest(tx: &mut Tx, input: &InboundInput) -> StoreResult<Ingested> {
    let k = tx.keys.clone();
    if let Some(id) = tx.hget(&k.external_ids(), &input.external_id).await? {
        let message = reads::load_message(&mut tx.conn, &k, &MessageId::trusted(id)).await?;
        let thread = reads::load_thread(&mut tx.conn, &k, &message.thread_id).await?;
        return Ok(Ingested {
            message,
            thread,
            created: false,
        });
    }
    let location = tx
        .hget(&k.location_numbers(), input.to.as_str())
        .await?
        .map(LocationId::trusted)
        .ok_or_else(|| StoreError::invalid("to", format!("{} is not an SMS number of any location", input.to)))?;
    let current_id = tx
        .hget(&k.thread_keys(), &thread_key_field(&location, &input.from))
        .await?
        .map(ThreadId::trusted);
    let current = match &current_id {
        Some(id) => Some(thread_record(tx, id).await?),
        None => None,
    };
    let mut listing: Vec<(FolderId, LocationId)> = Vec::new();
    for id in tx.smembers(&k.number_folders(&input.from)).await? {
        let id = FolderId::trusted(id);
        if let Some(record) = folder_record(tx, &id).await? {
            listing.push((id, record.location_id));
        }
    }
    let thread_id = current_id.clone().unwrap_or_else(ThreadId::generate);
    let message = Message {
        id: MessageId::generate(),
        thread_id: thread_id.clone(),
        direction: Direction::Inbound,
        body: input.body.clone(),
        attachments: input
            .attachments
            .iter()
            .map(|a| Attachment {
                id: AttachmentId::generate(),
                url: a.url.to_string(),
                content_type: a.content_type.to_string(),
            })
            .collect(),
        created_at: input.received_at.unwrap_or_else(Timestamp::now),
        author_id: None,
        external_id: Some(input.external_id.clone()),
    };
    let seq = next_message_seq(tx).await?;
    insert_message(tx, &message, seq);
    let at = message.created_at.micros();
    let row = match &current {
        Some(t) => {
            let newest = at >= t.last_message_at;
            ThreadRecord {
                folder_id: rules::auto_assign(t.folder_id.clone(), &t.location_id, &listing),
                unread_count: rules::next_unread_count(t.unread_count, ReadChange::Inbound),
                last_message_id: if newest {
                    message.id.clone()
                } else {
                    t.last_message_id.clone()
                },
                last_message_at: t.last_message_at.max(at),
                ..t.clone()
            }
        }
        None => {
            tx.hset(
                &k.thread_keys(),
                &thread_key_field(&location, &input.from),
                thread_id.as_str(),
            );
            ThreadRecord {
                location_id: location.clone(),
                customer_number: input.from.as_str().to_owned(),
                folder_id: rules::auto_assign(None, &location, &listing),
                unread_count: rules::next_unread_count(0, ReadChange::Inbound),
                last_message_id: message.id.clone(),
                last_message_at: at,
            }
        }
    };
    save_thread(tx, &thread_id, current.as_ref(), &row);
    let route = route_for(tx, &location, row.folder_id.as_ref()).await?;
    let delta = match &current {
        None => rules::count_delta(ReadChange::Inbound, 0, &[], &route.users),
        Some(t) if t.folder_id == row.folder_id => {
            rules::count_delta(ReadChange::Inbound, t.unread_count, &route.users, &route.users)
        }
        Some(t) => {
            let old = route_for(tx, &location, t.folder_id.as_ref()).await?;
            rules::count_delta(ReadChange::Inbound, t.unread_count, &old.users, &route.users)
        }
    };
    let thread = if row.last_message_id == message.id {
        row.into_thread(&thread_id, message.clone())
    } else {
        full_thread(tx, &thread_id, row).await?
    };
    tx.emit(NewEvent::new(
        EventKind::MessageNew,
        route.clone(),
        json!({"thread": thread, "message": message}),
    ));
    tx.emit(NewEvent::new(
        EventKind::UnreadCount,
        rules::count_route(&route),
        event::count_data(delta),
    ));
    Ok(Ingested {
        message,
        thread,
        created: true,
    })
}

pub async fn change_read_state(tx: &mut Tx, id: &ThreadId, by: &UserId, change: ReadChange) -> StoreResult<Thread> {
    let row = thread_record(tx, id).await?;
    let count = rules::next_unread_count(row.unread_count, change);
    if count == row.unread_count {
        return full_thread(tx, id, row).await;
    }
    let new = ThreadRecord {
        unread_count: count,
        ..row.clone()
    };
    save_thread(tx, id, Some(&row), &new);
    let route = route_for(tx, &new.location_id, new.folder_id.as_ref()).await?;
    let kind = if count == 0 {
        EventKind::ThreadRead
    } else {
        EventKind::ThreadUnread
    };
    tx.emit(NewEvent::new(kind, route.clone(), json!({"thread_id": id, "by": by})));
    tx.emit(NewEvent::new(
        EventKind::UnreadCount,
        rules::count_route(&route),
        json!({}),
    ));
    full_thread(tx, id, new).await
}

pub async fn reply(tx: &mut Tx, id: &ThreadId, by: &UserId, body: &str) -> StoreResult<Message> {
    let row = thread_record(tx, id).await?;
    let now = Timestamp::now().micros().max(row.last_message_at);
    let message = Message {
        id: MessageId::generate(),
        thread_id: id.clone(),
        direction: Direction::Outbound,
        body: body.to_owned(),
        attachments: Vec::new(),
        created_at: Timestamp::from_micros(now),
        author_id: Some(by.clone()),
        external_id: None,
    };
    let seq = next_message_seq(tx).await?;
    insert_message(tx, &message, seq);
    let was_unread = row.unread_count > 0;
    let new = ThreadRecord {
        unread_count: rules::next_unread_count(row.unread_count, ReadChange::Reply),
        last_message_id: message.id.clone(),
        last_message_at: now,
        ..row.clone()
    };
    save_thread(tx, id, Some(&row), &new);
    let route = route_for(tx, &new.location_id, new.folder_id.as_ref()).await?;
    let thread = new.into_thread(id, message.clone());
    tx.emit(NewEvent::new(
        EventKind::MessageSent,
        rules::sent_route(&route),
        json!({"thread": thread, "message": message}),
    ));
    if was_unread {
        tx.emit(NewEvent::new(
            EventKind::ThreadRead,
            route.clone(),
            json!({"thread_id": id, "by": by}),
        ));
        tx.emit(NewEvent::new(
            EventKind::UnreadCount,
            rules::count_route(&route),
            json!({}),
        ));
    }
    Ok(message)
}

pub async fn assign(tx: &mut Tx, id: &ThreadId, folder: &FolderId, by: &UserId) -> StoreResult<Thread> {
    let row = thread_record(tx, id).await?;
    let target = folder_record(tx, folder).await?.ok_or(StoreError::NotFound("folder"))?;
    if !rules::assignable(&row.location_id, &target.location_id) {
        return Err(crate::plan::Refused::OtherLocation {
            thread: row.location_id.clone(),
            folder: target.location_id.clone(),
        }
        .into());
    }
    if row.folder_id.as_ref() == Some(folder) {
        return full_thread(tx, id, row).await;
    }
    let old_route = route_for(tx, &row.location_id, row.folder_id.as_ref()).await?;
    let new_route = route_for(tx, &row.location_id, Some(folder)).await?;
    let previous = row.folder_id.clone();
    let new = ThreadRecord {
        folder_id: Some(folder.clone()),
        ..row.clone()
    };
    save_thread(tx, id, Some(&row), &new);
    let unread = new.unread_count > 0;
    let thread = full_thread(tx, id, new).await?;
    let route = rules::union_route(old_route.clone(), &new_route);
    tx.emit(NewEvent::new(
        EventKind::ThreadAssigned,
        route,
        json!({"thread": thread, "previous_folder_id": previous, "by": by}),
    ));
    if let Some(counts) =
        rules::reassignment_count_route(&thread.location_id, unread, &old_route.users, &new_route.users)
    {
        tx.emit(NewEvent::new(EventKind::UnreadCount, counts, json!({})));
    }
    Ok(thread)
}

pub async fn link_images(tx: &mut Tx, message: &MessageId, by: &UserId) -> StoreResult<Linked> {
    let k = tx.keys.clone();
    let m = reads::load_message(&mut tx.conn, &k, message).await?;
    let thread = thread_record(tx, &m.thread_id).await?;
    let folder = thread
        .folder_id
        .clone()
        .ok_or_else(|| StoreError::Conflict("the message's thread has no folder; assign one first".into()))?;
    let now = Timestamp::now().micros();
    let key = k.photos(&folder);
    let mut linked = 0u32;
    let mut photos = Vec::new();
    for a in m.attachments.iter().filter(|a| a.is_image()) {
        match tx.hget(&key, a.id.as_str()).await? {
            // Linked before (by whoever did first): kept as it is.
            Some(text) => photos.push(decode::<PhotoRecord>("photo", &text)?.into_photo(a.id.clone())),
            None => {
                let record = PhotoRecord {
                    message_id: m.id.clone(),
                    url: a.url.clone(),
                    linked_by: by.clone(),
                    linked_at: now,
                };
                tx.hset(&key, a.id.as_str(), &encode(&record));
                photos.push(record.into_photo(a.id.clone()));
                linked += 1;
            }
        }
    }
    if linked > 0 {
        let route = route_for(tx, &thread.location_id, Some(&folder)).await?;
        tx.emit(NewEvent::new(
            EventKind::ImagesLinked,
            route,
            json!({"message_id": m.id, "folder_id": folder, "count": linked}),
        ));
    }
    reads::sort_photos(&mut photos);
    Ok(Linked {
        folder_id: folder,
        linked,
        photos,
    })
}

// ---------------------------------------------------------------------------------------
// Subscriptions

/// Stages the change; the caller answers with `/me` as it is after the commit.
pub async fn set_subscribe_all(tx: &mut Tx, scope: &Scope, on: bool) -> StoreResult<()> {
    let key = tx.keys.subscribe_all();
    let before = tx.hget(&key, scope.user.as_str()).await?.is_some();
    if before != on {
        if on {
            tx.hset(&key, scope.user.as_str(), "1");
        } else {
            tx.hdel(&key, scope.user.as_str());
        }
        let route = Route {
            users: vec![scope.user.clone()],
            ..Route::default()
        };
        tx.emit(NewEvent::new(
            EventKind::SubscriptionChanged,
            route.clone(),
            json!({"subscribe_all": on}),
        ));
        tx.emit(NewEvent::new(EventKind::UnreadCount, route, json!({})));
    }
    Ok(())
}
