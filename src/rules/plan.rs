//! Planning every change of state: one pure function per mutating call, from the facts a
//! store read to what the change does — the new state to store and the events to append,
//! each with its kind, route, payload and count delta.
//!
//! A store's write is always the same three steps: read the facts (the thread, its folder's
//! resources, the preferences …), call the plan here, apply what it says in one transaction
//! (rows, then the events in order). No store decides who hears of a change, what a payload
//! holds or how far a count moves; every store applies the same plans, so they cannot drift
//! apart. The rules themselves (who is notified, auto-assignment, read state, count deltas)
//! are in [`crate::rules`]; this module puts them together per call.
//!
//! Ids and the clock come in as arguments (`NewIds`, `now`), so a plan is a function of its
//! inputs alone and table tests pin it down.

use serde_json::json;

use crate::{
    domain::input::{InboundInput, PreferencesPatch},
    domain::{
        AttachmentId, FolderId, LocationId, MessageId, ThreadId, UserId,
        model::{Attachment, Direction, Message, Photo, Preferences, Thread, Timestamp},
    },
    event::{self, EventKind, NewEvent, Route},
    rules::{self, ReadChange, Resources},
};

/// A change the rules refuse (stores answer it as their own error: `StoreError: From<Refused>`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    /// A folder offered to a thread at another location (`rules::assignable`).
    #[error("the folder is at location {folder}, the thread at {thread}: a thread takes a folder of its own location")]
    OtherLocation { thread: LocationId, folder: LocationId },
    /// Linking images of a thread without a folder.
    #[error("the message's thread has no folder; assign one first")]
    NoFolder,
    /// A guarded reply to a thread that holds messages newer than the one the replier saw
    /// (`newer`, oldest first): nothing is sent.
    #[error("the thread holds {} message(s) newer than after_message_id; nothing was sent", newer.len())]
    ThreadChanged { newer: Vec<Message> },
}

/// The route of events about a thread at `location` whose folder has `resources`.
fn thread_route(location: &LocationId, resources: &Resources, prefs: Preferences) -> Route {
    rules::thread_route(location, &rules::notified(resources, prefs))
}

/// An `unread.count` asking every user of `route` to read their count again.
fn recount(route: Route) -> NewEvent {
    NewEvent::new(EventKind::UnreadCount, route, event::count_data(None))
}

fn recount_users(users: Vec<UserId>) -> Option<NewEvent> {
    (!users.is_empty()).then(|| {
        recount(Route {
            users,
            ..Route::default()
        })
    })
}

// ---------------------------------------------------------------------------------------
// Directory

/// Upserting a folder whose resources were `before` (`None`: a new folder) and are `after`:
/// the unread counts of the resources who joined or left the audience of its unread threads
/// move (`has_unread_threads`: whether it has any).
pub fn upsert_folder(
    before: Option<&Resources>,
    after: &Resources,
    prefs: Preferences,
    has_unread_threads: bool,
) -> Vec<NewEvent> {
    match before {
        Some(before) if before != after && has_unread_threads => recount_users(rules::moved(
            &rules::notified(before, prefs),
            &rules::notified(after, prefs),
        ))
        .into_iter()
        .collect(),
        _ => Vec::new(),
    }
}

/// The preferences after `patch`: a missing key keeps its value.
pub fn preferences(before: Preferences, patch: PreferencesPatch) -> Preferences {
    Preferences {
        notify_sales_resource: patch.notify_sales_resource.unwrap_or(before.notify_sales_resource),
        notify_service_resource: patch.notify_service_resource.unwrap_or(before.notify_service_resource),
    }
}

/// Whether changing the preferences from `before` to `after` needs the folders with unread
/// threads (`preference_counts`'s facts): only when they changed.
pub fn preferences_changed(before: Preferences, after: Preferences) -> bool {
    before != after
}

/// The events of a preference change: the resources of folders with unread threads
/// (`folders_with_unread`) whose notification flipped have their counts moved.
pub fn preference_counts(before: Preferences, after: Preferences, folders_with_unread: &[Resources]) -> Vec<NewEvent> {
    if before == after {
        return Vec::new();
    }
    recount_users(rules::moved_by_preferences(folders_with_unread, before, after))
        .into_iter()
        .collect()
}

/// A user turning `subscribe_all` from `before` to `on`: the hubs move their sessions
/// (`subscription.changed`), and their count covers other threads now. Nothing when it
/// does not change.
pub fn subscribe_all(user: &UserId, before: bool, on: bool) -> Vec<NewEvent> {
    if before == on {
        return Vec::new();
    }
    let route = Route {
        users: vec![user.clone()],
        ..Route::default()
    };
    vec![
        NewEvent::new(
            EventKind::SubscriptionChanged,
            route.clone(),
            json!({ "subscribe_all": on }),
        ),
        recount(route),
    ]
}

// ---------------------------------------------------------------------------------------
// Threads and messages

/// A folder as a candidate for auto-assignment: where it is and who its resources are.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderFacts {
    pub id: FolderId,
    pub location_id: LocationId,
    pub resources: Resources,
}

/// What an inbound message's plan reads.
#[derive(Debug, Clone)]
pub struct IngestFacts<'a> {
    /// The location whose SMS number the message was sent to.
    pub location: &'a LocationId,
    /// The thread for (location, sender), if there is one.
    pub thread: Option<&'a Thread>,
    /// The resources of that thread's folder (default when it has none).
    pub current: Resources,
    /// Every folder that lists the sender's number, wherever it is.
    pub listing: &'a [FolderFacts],
    pub prefs: Preferences,
}

/// The ids a new message (and its thread, when new) takes.
#[derive(Debug, Clone)]
pub struct NewIds {
    /// Used only when the thread is new.
    pub thread: ThreadId,
    pub message: MessageId,
    /// One per attachment, in order.
    pub attachments: Vec<AttachmentId>,
}

/// What storing an inbound message does.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingestion {
    pub message: Message,
    /// The thread after it: created (`created_thread`), or the existing one moved on.
    pub thread: Thread,
    pub created_thread: bool,
    pub events: Vec<NewEvent>,
}

/// An inbound message joins (or starts) its thread: the thread becomes unread, is
/// auto-assigned if it had no folder, and its audience gets `message.new` and the count.
pub fn ingest(facts: IngestFacts<'_>, input: InboundInput, ids: NewIds, now: Timestamp) -> Ingestion {
    let thread_id = facts.thread.map_or(ids.thread, |t| t.id.clone());
    let message = Message {
        id: ids.message,
        thread_id: thread_id.clone(),
        direction: Direction::Inbound,
        body: input.body,
        attachments: input
            .attachments
            .into_iter()
            .zip(ids.attachments)
            .map(|(a, id)| Attachment {
                id,
                url: a.url.into(),
                content_type: a.content_type.into(),
            })
            .collect(),
        created_at: input.received_at.unwrap_or(now),
        author_id: None,
        external_id: Some(input.external_id),
    };
    let listing: Vec<(FolderId, LocationId)> = facts
        .listing
        .iter()
        .map(|f| (f.id.clone(), f.location_id.clone()))
        .collect();
    let (before_folder, unread_before) = facts
        .thread
        .map_or((None, 0), |t| (t.folder_id.clone(), t.unread_count));
    let folder = rules::auto_assign(before_folder.clone(), facts.location, &listing);
    let resources = if folder == before_folder {
        facts.current.clone()
    } else {
        facts
            .listing
            .iter()
            .find(|f| Some(&f.id) == folder.as_ref())
            .map(|f| f.resources.clone())
            .unwrap_or_default()
    };
    let unread_count = rules::next_unread_count(unread_before, ReadChange::Inbound);
    let thread = match facts.thread {
        Some(t) => {
            // A message received earlier than the thread's newest keeps that one last.
            let newest = message.created_at >= t.last_message_at;
            Thread {
                folder_id: folder,
                unread: unread_count > 0,
                unread_count,
                last_message: if newest {
                    message.clone()
                } else {
                    t.last_message.clone()
                },
                last_message_at: t.last_message_at.max(message.created_at),
                ..t.clone()
            }
        }
        None => Thread {
            id: thread_id,
            location_id: facts.location.clone(),
            customer_number: input.from,
            folder_id: folder,
            unread: unread_count > 0,
            unread_count,
            last_message: message.clone(),
            last_message_at: message.created_at,
        },
    };
    let notified_before = match facts.thread {
        None => Vec::new(),
        Some(_) => rules::notified(&facts.current, facts.prefs),
    };
    let notified_after = rules::notified(&resources, facts.prefs);
    let delta = rules::count_delta(ReadChange::Inbound, unread_before, &notified_before, &notified_after);
    let route = rules::thread_route(&thread.location_id, &notified_after);
    let events = vec![
        NewEvent::new(
            EventKind::MessageNew,
            route.clone(),
            json!({"thread": thread, "message": message}),
        ),
        NewEvent::new(
            EventKind::UnreadCount,
            rules::count_route(&route),
            event::count_data(delta),
        ),
    ];
    Ingestion {
        message,
        created_thread: facts.thread.is_none(),
        thread,
        events,
    }
}

/// What a change of a thread's state does: the thread after it, and the events.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    pub thread: Thread,
    pub events: Vec<NewEvent>,
}

/// Marking a thread (whose folder has `resources`) read or unread by `by`; `None` when that
/// changes nothing (a no-op emits nothing).
pub fn read_state(
    thread: &Thread,
    resources: &Resources,
    prefs: Preferences,
    by: &UserId,
    change: ReadChange,
) -> Option<Changed> {
    let count = rules::next_unread_count(thread.unread_count, change);
    if count == thread.unread_count {
        return None;
    }
    let route = thread_route(&thread.location_id, resources, prefs);
    let kind = if count == 0 {
        EventKind::ThreadRead
    } else {
        EventKind::ThreadUnread
    };
    Some(Changed {
        thread: Thread {
            unread: count > 0,
            unread_count: count,
            ..thread.clone()
        },
        events: vec![
            NewEvent::new(kind, route.clone(), json!({"thread_id": thread.id, "by": by})),
            recount(rules::count_route(&route)),
        ],
    })
}

/// What a reply does: the outbound message, the thread after it, and the events.
#[derive(Debug, Clone, PartialEq)]
pub struct Replied {
    pub message: Message,
    pub thread: Thread,
    pub events: Vec<NewEvent>,
}

/// `by` replies `body` on a thread (whose folder has `resources`): the message is sent (its
/// audience and the tenant's services hear of it) and the thread becomes read. The reply is
/// never older than the thread's newest message, whatever the clock says.
///
/// `newer`: for a guarded reply, the thread's messages newer than the one the replier saw
/// (the store reads them; empty for an unguarded one). Any at all refuse the reply
/// (`Refused::ThreadChanged`, carrying them), so nobody answers a customer blind to what was
/// said since.
#[allow(clippy::too_many_arguments)]
pub fn reply(
    thread: &Thread,
    resources: &Resources,
    prefs: Preferences,
    by: &UserId,
    body: String,
    id: MessageId,
    now: Timestamp,
    newer: Vec<Message>,
) -> Result<Replied, Refused> {
    if !newer.is_empty() {
        return Err(Refused::ThreadChanged { newer });
    }
    let at = now.max(thread.last_message_at);
    let message = Message {
        id,
        thread_id: thread.id.clone(),
        direction: Direction::Outbound,
        body,
        attachments: Vec::new(),
        created_at: at,
        author_id: Some(by.clone()),
        external_id: None,
    };
    let unread_count = rules::next_unread_count(thread.unread_count, ReadChange::Reply);
    let after = Thread {
        unread: unread_count > 0,
        unread_count,
        last_message: message.clone(),
        last_message_at: at,
        ..thread.clone()
    };
    let route = thread_route(&thread.location_id, resources, prefs);
    let mut events = vec![NewEvent::new(
        EventKind::MessageSent,
        rules::sent_route(&route),
        json!({"thread": after, "message": message}),
    )];
    if thread.unread_count > 0 {
        events.push(NewEvent::new(
            EventKind::ThreadRead,
            route.clone(),
            json!({"thread_id": thread.id, "by": by}),
        ));
        events.push(recount(rules::count_route(&route)));
    }
    Ok(Replied {
        message,
        thread: after,
        events,
    })
}

/// `by` assigns a thread (on a folder with `current` resources, or none) to `target`:
/// refused for a folder of another location (`rules::assignable`); nothing for the folder it
/// has; else the old and the new audience hear of it, and the counts of the resources who
/// joined or left an unread thread's audience move.
pub fn assign(
    thread: &Thread,
    current: &Resources,
    target: &FolderFacts,
    prefs: Preferences,
    by: &UserId,
) -> Result<Option<Changed>, Refused> {
    if !rules::assignable(&thread.location_id, &target.location_id) {
        return Err(Refused::OtherLocation {
            thread: thread.location_id.clone(),
            folder: target.location_id.clone(),
        });
    }
    if thread.folder_id.as_ref() == Some(&target.id) {
        return Ok(None);
    }
    let old_route = thread_route(&thread.location_id, current, prefs);
    let new_route = thread_route(&thread.location_id, &target.resources, prefs);
    let after = Thread {
        folder_id: Some(target.id.clone()),
        ..thread.clone()
    };
    let mut events = vec![NewEvent::new(
        EventKind::ThreadAssigned,
        rules::union_route(old_route.clone(), &new_route),
        json!({"thread": after, "previous_folder_id": thread.folder_id, "by": by}),
    )];
    events.extend(
        rules::reassignment_count_route(
            &thread.location_id,
            thread.unread_count > 0,
            &old_route.users,
            &new_route.users,
        )
        .map(recount),
    );
    Ok(Some(Changed { thread: after, events }))
}

/// What linking a message's images does: the photos now linked (new ones only) and the
/// event.
#[derive(Debug, Clone, PartialEq)]
pub struct Linking {
    pub folder_id: FolderId,
    pub new_photos: Vec<Photo>,
    pub events: Vec<NewEvent>,
}

/// `by` links the image attachments of `message` (in `thread`, whose folder has `resources`)
/// to the thread's folder; `already` lists the attachments linked there before (linking
/// twice adds nothing). A thread without a folder: 409.
pub fn link_images(
    message: &Message,
    thread: &Thread,
    resources: &Resources,
    prefs: Preferences,
    already: &[AttachmentId],
    by: &UserId,
    now: Timestamp,
) -> Result<Linking, Refused> {
    let folder = thread.folder_id.clone().ok_or(Refused::NoFolder)?;
    let new_photos: Vec<Photo> = message
        .attachments
        .iter()
        .filter(|a| a.is_image() && !already.contains(&a.id))
        .map(|a| Photo {
            attachment_id: a.id.clone(),
            message_id: message.id.clone(),
            url: a.url.clone(),
            linked_by: by.clone(),
            linked_at: now,
        })
        .collect();
    let events = if new_photos.is_empty() {
        Vec::new()
    } else {
        vec![NewEvent::new(
            EventKind::ImagesLinked,
            thread_route(&thread.location_id, resources, prefs),
            json!({"message_id": message.id, "folder_id": folder, "count": new_photos.len()}),
        )]
    };
    Ok(Linking {
        folder_id: folder,
        new_photos,
        events,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::domain::{Id, PhoneNumber, input::AttachmentInput, model::Attachment};

    fn id<T: Id>(s: &str) -> T {
        T::parse(s).unwrap()
    }
    fn users(list: &[&str]) -> Vec<UserId> {
        list.iter().map(|u| id(u)).collect()
    }
    fn res(sales: Option<&str>, service: Option<&str>) -> Resources {
        Resources {
            sales: sales.map(id),
            service: service.map(id),
        }
    }
    const BOTH: Preferences = Preferences {
        notify_sales_resource: true,
        notify_service_resource: true,
    };
    fn at(micros: i64) -> Timestamp {
        Timestamp::from_micros(micros)
    }

    fn message(m: &str, t: &str, when: i64) -> Message {
        Message {
            id: id(m),
            thread_id: id(t),
            direction: Direction::Inbound,
            body: "hi".into(),
            attachments: Vec::new(),
            created_at: at(when),
            author_id: None,
            external_id: Some(format!("x-{m}")),
        }
    }

    /// Thread t1 at L1 from +15551234567, on `folder`, with `unread` unread, last at 100.
    fn thread(folder: Option<&str>, unread: u32) -> Thread {
        Thread {
            id: id("t1"),
            location_id: id("L1"),
            customer_number: PhoneNumber::trusted("+15551234567"),
            folder_id: folder.map(id),
            unread: unread > 0,
            unread_count: unread,
            last_message: message("m0", "t1", 100),
            last_message_at: at(100),
        }
    }

    fn folder(f: &str, location: &str, r: Resources) -> FolderFacts {
        FolderFacts {
            id: id(f),
            location_id: id(location),
            resources: r,
        }
    }

    /// The events as (kind, users, subscribers, services, data) for comparing.
    fn brief(events: &[NewEvent]) -> Vec<(EventKind, Vec<UserId>, bool, bool, Value)> {
        events
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.route.users.clone(),
                    e.route.subscribers,
                    e.route.services,
                    serde_json::from_str(&e.data).unwrap(),
                )
            })
            .collect()
    }

    fn recount_of(list: &[&str]) -> (EventKind, Vec<UserId>, bool, bool, Value) {
        (EventKind::UnreadCount, users(list), false, false, serde_json::json!({}))
    }

    #[test]
    fn a_folder_upsert_recounts_the_resources_who_joined_or_left_its_unread_threads() {
        let (sam, tom) = (res(Some("sam"), None), res(Some("tom"), None));
        let cases: &[(Option<&Resources>, &Resources, bool, &[&str])] = &[
            (None, &sam, true, &[]),
            (Some(&sam), &sam, true, &[]),
            (Some(&sam), &tom, false, &[]),
            (Some(&sam), &tom, true, &["sam", "tom"]),
        ];
        for (before, after, unread, want) in cases {
            let events = upsert_folder(*before, after, BOTH, *unread);
            let want: Vec<_> = (!want.is_empty()).then(|| recount_of(want)).into_iter().collect();
            assert_eq!(
                brief(&events),
                want,
                "{before:?} -> {after:?}, unread threads: {unread}"
            );
        }
    }

    #[test]
    fn a_preference_change_recounts_the_resources_it_flips_and_a_patch_keeps_what_it_omits() {
        let off_sales = Preferences {
            notify_sales_resource: false,
            ..BOTH
        };
        let patch = PreferencesPatch {
            notify_sales_resource: Some(false),
            notify_service_resource: None,
        };
        assert_eq!(preferences(BOTH, patch), off_sales);
        assert!(preferences_changed(BOTH, off_sales));
        assert!(!preferences_changed(
            BOTH,
            preferences(BOTH, PreferencesPatch::default())
        ));
        let folders = [res(Some("sam"), Some("sue")), res(Some("tom"), None)];
        assert_eq!(
            brief(&preference_counts(BOTH, off_sales, &folders)),
            vec![recount_of(&["sam", "tom"])]
        );
        assert!(preference_counts(BOTH, BOTH, &folders).is_empty());
        assert!(preference_counts(BOTH, off_sales, &[]).is_empty(), "no unread folder");
    }

    #[test]
    fn subscribing_to_all_tells_the_hubs_and_recounts_and_the_same_value_does_nothing() {
        let events = subscribe_all(&id("olga"), false, true);
        assert_eq!(
            brief(&events),
            vec![
                (
                    EventKind::SubscriptionChanged,
                    users(&["olga"]),
                    false,
                    false,
                    serde_json::json!({"subscribe_all": true})
                ),
                recount_of(&["olga"]),
            ]
        );
        assert!(subscribe_all(&id("olga"), true, true).is_empty());
    }

    fn inbound(received_at: Option<i64>) -> InboundInput {
        InboundInput {
            external_id: "SM9".into(),
            from: PhoneNumber::trusted("+15551234567"),
            to: PhoneNumber::trusted("+15550001111"),
            body: "the water is back".into(),
            attachments: vec![AttachmentInput {
                url: crate::domain::AttachmentUrl::parse("https://media.example/1.jpg").unwrap(),
                content_type: crate::domain::MediaType::parse("image/jpeg").unwrap(),
            }],
            received_at: received_at.map(at),
        }
    }

    fn new_ids() -> NewIds {
        NewIds {
            thread: id("t9"),
            message: id("m9"),
            attachments: vec![id("a9")],
        }
    }

    #[test]
    fn an_inbound_message_starts_a_thread_assigned_to_the_one_folder_at_its_location() {
        let location = id("L1");
        let listing = [
            folder("F1", "L1", res(Some("sam"), Some("sue"))),
            folder("F2", "L2", res(Some("lee"), None)),
        ];
        let facts = IngestFacts {
            location: &location,
            thread: None,
            current: Resources::default(),
            listing: &listing,
            prefs: BOTH,
        };
        let got = ingest(facts, inbound(None), new_ids(), at(500));
        assert!(got.created_thread);
        assert_eq!(got.thread.id, id::<ThreadId>("t9"));
        assert_eq!(got.thread.folder_id, Some(id("F1")));
        assert_eq!((got.thread.unread, got.thread.unread_count), (true, 1));
        assert_eq!(got.message.created_at, at(500), "now, with no received_at");
        assert_eq!(got.message.attachments[0].id, id::<AttachmentId>("a9"));
        assert_eq!(got.thread.last_message, got.message);
        let events = brief(&got.events);
        assert_eq!(events[0].0, EventKind::MessageNew);
        assert_eq!((events[0].1.clone(), events[0].2), (users(&["sam", "sue"]), true));
        assert_eq!(events[0].4["thread"]["folder_id"], "F1");
        assert_eq!(events[0].4["message"]["id"], "m9");
        assert_eq!(
            events[1],
            (
                EventKind::UnreadCount,
                users(&["sam", "sue"]),
                true,
                false,
                serde_json::json!({"delta": 1})
            )
        );
    }

    #[test]
    fn an_inbound_message_to_an_unread_thread_that_gains_resources_asks_them_to_recount() {
        let location = id("L1");
        let current = thread(None, 2);
        let listing = [folder("F1", "L1", res(Some("sam"), None))];
        let facts = IngestFacts {
            location: &location,
            thread: Some(&current),
            current: Resources::default(),
            listing: &listing,
            prefs: BOTH,
        };
        let got = ingest(facts, inbound(Some(200)), new_ids(), at(500));
        assert!(!got.created_thread);
        assert_eq!(got.thread.id, id::<ThreadId>("t1"), "the existing thread");
        assert_eq!(got.thread.unread_count, 3);
        assert_eq!(got.thread.folder_id, Some(id("F1")));
        assert_eq!(
            brief(&got.events)[1].4,
            serde_json::json!({}),
            "sam joined an unread thread"
        );
    }

    #[test]
    fn a_message_received_before_the_threads_newest_leaves_that_one_last() {
        let location = id("L1");
        let current = thread(Some("F1"), 0);
        let facts = IngestFacts {
            location: &location,
            thread: Some(&current),
            current: res(Some("sam"), None),
            listing: &[],
            prefs: BOTH,
        };
        let got = ingest(facts, inbound(Some(50)), new_ids(), at(500));
        assert_eq!(got.message.created_at, at(50));
        assert_eq!(got.thread.last_message.id, id::<MessageId>("m0"));
        assert_eq!(got.thread.last_message_at, at(100));
        assert_eq!(
            got.thread.folder_id,
            Some(id("F1")),
            "an assigned thread keeps its folder"
        );
        assert_eq!(brief(&got.events)[1].4, serde_json::json!({"delta": 1}));
    }

    #[test]
    fn read_and_unread_change_the_count_and_tell_the_audience_or_do_nothing() {
        let sam = res(Some("sam"), None);
        let by: UserId = id("olga");
        // (unread before, change, the event and the count after; none for a no-op)
        type Case = (u32, ReadChange, Option<(EventKind, u32)>);
        let cases: &[Case] = &[
            (3, ReadChange::MarkRead, Some((EventKind::ThreadRead, 0))),
            (0, ReadChange::MarkRead, None),
            (0, ReadChange::MarkUnread, Some((EventKind::ThreadUnread, 1))),
            (2, ReadChange::MarkUnread, None),
        ];
        for (unread, change, want) in cases {
            let got = read_state(&thread(Some("F1"), *unread), &sam, BOTH, &by, *change);
            match (got, want) {
                (None, None) => {}
                (Some(c), Some((kind, count))) => {
                    assert_eq!(c.thread.unread_count, *count);
                    assert_eq!(c.thread.unread, *count > 0);
                    let events = brief(&c.events);
                    assert_eq!(
                        (events[0].0, events[0].4.clone()),
                        (*kind, serde_json::json!({"thread_id": "t1", "by": "olga"}))
                    );
                    assert_eq!(
                        events[1],
                        (
                            EventKind::UnreadCount,
                            users(&["sam"]),
                            true,
                            false,
                            serde_json::json!({})
                        )
                    );
                }
                (got, want) => panic!("{unread} {change:?}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn a_reply_reaches_the_services_reads_the_thread_and_is_never_older_than_its_newest() {
        let sam = res(Some("sam"), None);
        let by: UserId = id("sam");
        let unread = reply(
            &thread(Some("F1"), 2),
            &sam,
            BOTH,
            &by,
            "on our way".into(),
            id("m5"),
            at(50),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(unread.message.created_at, at(100), "the clock was behind the thread");
        assert_eq!(unread.message.author_id, Some(by.clone()));
        assert_eq!(
            (unread.thread.unread_count, unread.thread.last_message.id.as_str()),
            (0, "m5")
        );
        let events = brief(&unread.events);
        assert_eq!(
            events.iter().map(|e| e.0).collect::<Vec<_>>(),
            [EventKind::MessageSent, EventKind::ThreadRead, EventKind::UnreadCount]
        );
        assert!(events[0].3, "message.sent reaches the services");
        assert!(!events[1].3 && !events[2].3);

        let read = reply(
            &thread(Some("F1"), 0),
            &sam,
            BOTH,
            &by,
            "more".into(),
            id("m6"),
            at(700),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(read.message.created_at, at(700));
        assert_eq!(brief(&read.events).len(), 1, "a read thread: message.sent only");
    }

    #[test]
    fn a_guarded_reply_to_a_thread_with_newer_messages_is_refused_with_them_and_plans_nothing() {
        let sam = res(Some("sam"), None);
        let by: UserId = id("sam");
        let t = thread(Some("F1"), 1);
        let newer = vec![t.last_message.clone()];
        let refused = reply(
            &t,
            &sam,
            BOTH,
            &by,
            "on our way".into(),
            id("m7"),
            at(900),
            newer.clone(),
        );
        assert_eq!(refused, Err(Refused::ThreadChanged { newer }));
    }

    #[test]
    fn an_assignment_needs_a_folder_of_the_threads_location_and_recounts_who_joined_or_left() {
        let by: UserId = id("olga");
        let here = folder("F2", "L1", res(Some("tom"), None));
        let elsewhere = folder("F3", "L2", res(Some("lee"), None));
        let sam = res(Some("sam"), None);

        let err = assign(&thread(Some("F1"), 1), &sam, &elsewhere, BOTH, &by).unwrap_err();
        assert!(matches!(err, Refused::OtherLocation { .. }), "{err:?}");

        let same = folder("F1", "L1", sam.clone());
        assert_eq!(assign(&thread(Some("F1"), 1), &sam, &same, BOTH, &by).unwrap(), None);

        let moved = assign(&thread(Some("F1"), 1), &sam, &here, BOTH, &by).unwrap().unwrap();
        assert_eq!(moved.thread.folder_id, Some(id("F2")));
        let events = brief(&moved.events);
        assert_eq!(events[0].0, EventKind::ThreadAssigned);
        assert_eq!(events[0].1, users(&["sam", "tom"]), "the old and the new audience");
        assert_eq!(events[0].4["previous_folder_id"], "F1");
        assert_eq!(
            events[1].1,
            users(&["sam", "tom"]),
            "an unread thread moves both counts"
        );

        let read = assign(&thread(Some("F1"), 0), &sam, &here, BOTH, &by).unwrap().unwrap();
        assert_eq!(read.events.len(), 1, "a read thread moves no count");
    }

    #[test]
    fn linking_images_takes_the_new_image_attachments_to_the_threads_folder() {
        let by: UserId = id("sam");
        let mut m = message("m1", "t1", 100);
        m.attachments = ["image/jpeg", "application/pdf", "IMAGE/PNG"]
            .iter()
            .enumerate()
            .map(|(i, ct)| Attachment {
                id: id(&format!("a{i}")),
                url: format!("https://media.example/{i}"),
                content_type: ct.to_string(),
            })
            .collect();
        let sam = res(Some("sam"), None);

        let err = link_images(&m, &thread(None, 0), &sam, BOTH, &[], &by, at(9)).unwrap_err();
        assert_eq!(err, Refused::NoFolder);

        let first = link_images(&m, &thread(Some("F1"), 0), &sam, BOTH, &[], &by, at(9)).unwrap();
        let linked: Vec<&str> = first.new_photos.iter().map(|p| p.attachment_id.as_str()).collect();
        assert_eq!(linked, ["a0", "a2"], "images only");
        assert_eq!(brief(&first.events)[0].4["count"], 2);

        let again = link_images(
            &m,
            &thread(Some("F1"), 0),
            &sam,
            BOTH,
            &[id("a0"), id("a2")],
            &by,
            at(9),
        )
        .unwrap();
        assert!(
            again.new_photos.is_empty() && again.events.is_empty(),
            "linking twice adds nothing"
        );
    }
}
