//! Events: what changed, who should hear of it (`Route`), and how they travel between nodes.
//!
//! An event is appended to the tenant's log in the transaction of the change it describes,
//! then published by the bus; its client frame (`protocol::event_frame`) is encoded once and
//! shared by every recipient session.

use serde::{Deserialize, Serialize};

use crate::domain::{LocationId, TenantId, UserId};

/// The event types of the contract, plus one internal type that never reaches a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "message.new")]
    MessageNew,
    #[serde(rename = "message.sent")]
    MessageSent,
    #[serde(rename = "thread.read")]
    ThreadRead,
    #[serde(rename = "thread.unread")]
    ThreadUnread,
    #[serde(rename = "thread.assigned")]
    ThreadAssigned,
    /// In the log, data `{"delta": n}` when the change moved every recipient's count by `n`
    /// (an inbound message: `rules::count_delta`), else `{}`: each recipient reads its count
    /// again. Each session writes its own `{"count": n}` (see `session`).
    #[serde(rename = "unread.count")]
    UnreadCount,
    #[serde(rename = "images.linked")]
    ImagesLinked,
    /// A user's `subscribe_all` changed (data: `{"subscribe_all": bool}`): the hubs update
    /// their session indexes. Internal.
    #[serde(rename = "subscription.changed")]
    SubscriptionChanged,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageNew => "message.new",
            EventKind::MessageSent => "message.sent",
            EventKind::ThreadRead => "thread.read",
            EventKind::ThreadUnread => "thread.unread",
            EventKind::ThreadAssigned => "thread.assigned",
            EventKind::UnreadCount => "unread.count",
            EventKind::ImagesLinked => "images.linked",
            EventKind::SubscriptionChanged => "subscription.changed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// Who receives an event. `rules::receives` is the one place that reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The thread's location: a user or admin must be granted it to receive the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationId>,
    /// Users who receive it (the notified resources of the thread's folder(s)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserId>,
    /// Sessions following one of these resources (the drop-down) receive it too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<UserId>,
    /// Users with `subscribe_all` on receive it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub subscribers: bool,
    /// `service` sessions of the tenant receive it, whatever their locations.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub services: bool,
}

/// An event before the log gives it an id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub route: Route,
    /// The `data` member of the frame, as JSON text.
    pub data: String,
}

impl NewEvent {
    pub fn new(kind: EventKind, route: Route, data: impl Serialize) -> Self {
        // unwrap: every data type we pass is a plain struct of strings, numbers and bools.
        NewEvent {
            kind,
            route,
            data: serde_json::to_string(&data).unwrap(),
        }
    }
}

/// A logged event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub tenant: TenantId,
    /// Position in the tenant's log: unique and increasing within the tenant.
    pub id: u64,
    pub kind: EventKind,
    pub route: Route,
    pub data: String,
}

/// How an event travels between nodes and sits in a shared log: `{"id", "kind", "route",
/// "data"}` (the tenant is in the channel or key name).
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    id: u64,
    kind: EventKind,
    route: Route,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

impl Event {
    /// The event as one JSON text, for a shared log or a pub/sub message.
    pub fn to_wire(&self) -> String {
        let data = serde_json::value::RawValue::from_string(self.data.clone())
            // unwrap_or: data is always JSON we encoded; null keeps a corrupt one harmless.
            .unwrap_or_else(|_| serde_json::value::RawValue::from_string("null".into()).unwrap());
        let wire = Wire {
            id: self.id,
            kind: self.kind,
            route: self.route.clone(),
            data: &data,
        };
        // unwrap: the wire struct is plain data.
        serde_json::to_string(&wire).unwrap()
    }

    /// Reads an event written by `to_wire`.
    pub fn from_wire(tenant: &TenantId, text: &str) -> Option<Event> {
        let w: Wire<'_> = serde_json::from_str(text).ok()?;
        Some(Event {
            tenant: tenant.clone(),
            id: w.id,
            kind: w.kind,
            route: w.route,
            data: w.data.get().to_owned(),
        })
    }
}

/// The logged data of an `unread.count`: `{"delta": n}`, or `{}` ("recompute").
pub fn count_data(delta: Option<i64>) -> serde_json::Value {
    match delta {
        Some(n) => serde_json::json!({ "delta": n }),
        None => serde_json::json!({}),
    }
}

/// The delta an `unread.count`'s logged data carries, if any (`count_data` reversed). Data
/// that is not of that shape (an older log) means "recompute".
pub fn count_delta(data: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(data)
        .ok()?
        .as_object()?
        .get("delta")?
        .as_i64()
}

/// The `subscribe_all` a `subscription.changed` event sets (false if its data lacks it).
pub fn subscribe_all_of(e: &Event) -> bool {
    serde_json::from_str::<serde_json::Value>(&e.data)
        .ok()
        .and_then(|v| v["subscribe_all"].as_bool())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_survives_the_wire() {
        use crate::domain::Id;
        let e = Event {
            tenant: TenantId::parse("acme").unwrap(),
            id: 42,
            kind: EventKind::MessageNew,
            route: Route {
                users: vec![UserId::parse("sam").unwrap()],
                subscribers: true,
                ..Route::default()
            },
            data: r#"{"thread":{"id":"t1"},"n":[1,2]}"#.into(),
        };
        assert_eq!(Event::from_wire(&e.tenant, &e.to_wire()), Some(e));
    }

    #[test]
    fn a_count_delta_survives_the_log_and_anything_else_means_recompute() {
        for d in [Some(1), Some(-3), None] {
            assert_eq!(count_delta(&count_data(d).to_string()), d);
        }
        for data in ["{}", "null", "", r#"{"delta":"1"}"#, r#"{"delta":1.5}"#, "[1]"] {
            assert_eq!(count_delta(data), None, "{data:?}");
        }
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in [
            EventKind::MessageNew,
            EventKind::MessageSent,
            EventKind::ThreadRead,
            EventKind::ThreadUnread,
            EventKind::ThreadAssigned,
            EventKind::UnreadCount,
            EventKind::ImagesLinked,
            EventKind::SubscriptionChanged,
        ] {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }
}
