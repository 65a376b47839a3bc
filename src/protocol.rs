//! The websocket protocol as types: what a client may send (`ClientFrame`, parsed once), what
//! the hub sends (`ServerFrame` and the event frames, encoded once each), and how a session
//! ends (`Close`, with what each code asks the client to do).
//!
//! Nothing here does I/O or knows a session: the session task matches on a parsed frame, and
//! the hub and the session encode through the functions here, so every frame of the contract
//! has one encoder.

use bytestring::ByteString;
use serde::{Deserialize, Deserializer, Serialize};

use crate::event::EventKind;

/// A frame a client may send (JSON text with a `type`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
// Unknown fields are ignored: a newer client may send more than this hub reads.
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    /// Answered with `pong` once every event committed before it was written.
    Ping,
    /// Replay what came after `last_event_id`.
    Resume { last_event_id: String },
    /// Also receive a resource's view (`null` stops).
    Follow {
        #[serde(deserialize_with = "present")]
        resource_id: Option<String>,
    },
    /// A fresher token for the same user.
    Refresh { token: String },
    /// Where this session is: viewing or typing in a thread, or idle.
    Presence { thread_id: String, state: PresenceState },
}

/// What a session says it does in a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    Viewing,
    Typing,
    /// In no thread (the thread id is then ignored).
    Idle,
}

/// A field that must be present, possibly `null` (serde takes a missing `Option` for `None`
/// unless the field has a deserializer of its own).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// Why a client frame was not understood (answered with `ErrorCode::BadFrame`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadFrame(pub String);

impl ClientFrame {
    /// Parses a text frame; the error says what was wrong, for the `bad_frame` answer.
    pub fn parse(text: &str) -> Result<ClientFrame, BadFrame> {
        serde_json::from_str(text).map_err(|e| {
            let what = e.to_string();
            // serde's message ends with the position, which says nothing to a client.
            let what = what.split(" at line ").next().unwrap_or(&what);
            if e.is_syntax() || e.is_eof() {
                BadFrame("frames are JSON text".into())
            } else {
                BadFrame(format!("not a client frame: {what}"))
            }
        })
    }
}

/// The codes of error frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, a binary frame, an unknown `type`, a missing or ill-typed field.
    BadFrame,
    /// A `refresh` token that does not verify.
    Unauthorized,
    /// Not allowed to this session (another user's token, `follow` from a service).
    Forbidden,
    /// Over the session's frame budget: the frame was dropped.
    RateLimited,
    /// Storage did not answer: try again.
    Unavailable,
}

/// A frame the hub sends that is not an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    /// The first frame of every session.
    Hello {
        session_id: &'a str,
        user_id: &'a str,
        unread_count: u64,
        /// The newest event of the tenant's log when the session opened, as a string.
        last_event_id: String,
    },
    Pong,
    /// A replay ended; `replayed` events were written before it.
    Resumed {
        replayed: u64,
    },
    /// The log cannot tell what came after the id: reload over REST.
    Resync,
    Error {
        code: ErrorCode,
        message: &'a str,
    },
}

impl ServerFrame<'_> {
    pub fn encode(&self) -> ByteString {
        // unwrap: plain data.
        ByteString::from(serde_json::to_string(self).unwrap())
    }
}

/// An event frame `{"type", "id", "data"}` around already-encoded `data`: encoded once per
/// event and shared by every recipient.
pub fn event_frame(kind: EventKind, id: u64, data: &str) -> ByteString {
    ByteString::from(format!(
        r#"{{"type":"{}","id":"{}","data":{}}}"#,
        kind.as_str(),
        id,
        data
    ))
}

/// The `unread.count` frame of event `id` carrying a session's `count`.
pub fn count_frame(id: u64, count: u64) -> ByteString {
    event_frame(EventKind::UnreadCount, id, &format!(r#"{{"count":{count}}}"#))
}

/// The presence frame of a thread: who is there now (`users` serialize as
/// `[{"user_id", "name", "state"}]`; empty when nobody is).
pub fn presence_frame(thread_id: &str, users: &impl Serialize) -> ByteString {
    #[derive(Serialize)]
    struct Data<'a, U> {
        thread_id: &'a str,
        users: &'a U,
    }
    #[derive(Serialize)]
    struct Frame<'a, U> {
        #[serde(rename = "type")]
        kind: &'static str,
        data: Data<'a, U>,
    }
    // unwrap: plain data.
    ByteString::from(
        serde_json::to_string(&Frame {
            kind: "presence",
            data: Data { thread_id, users },
        })
        .unwrap(),
    )
}

/// What a close code asks the client to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Reconnect (to any node) and resume from the last event id it saw.
    Resume,
    /// Reconnect with a fresh token, then resume.
    Reauthenticate,
    /// Something is wrong with the client itself: do not retry the same way.
    Stop,
    /// The client asked to close: nothing more.
    Nothing,
}

/// How a session ends: the websocket close code and reason, one variant per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// 1000: the answer to a client's Close without a (sendable) code.
    Normal,
    /// A client's Close answered with its own code (RFC 6455 §5.5.1).
    Echo(u16),
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: the client broke the websocket protocol.
    ProtocolError,
    /// 1007: a text frame that is not UTF-8.
    InvalidPayload,
    /// 1011: storage or the bus failed.
    Unavailable,
    /// 4000: nothing heard from the client within `ws.client_timeout_ms`.
    HeartbeatTimeout,
    /// 4001: the token expired (or was revoked).
    TokenExpired,
    /// 4008: the client fell behind (its queue overflowed) or the log no longer reaches back
    /// to it.
    TooSlow,
    /// 4009: a frame above `ws.max_frame_bytes`.
    FrameTooBig,
}

impl Close {
    /// The answer to a client's Close carrying `code`: its own, unless that is one an
    /// endpoint may not send (1004–1006, 1015, unassigned ones).
    pub fn echo(code: Option<u16>) -> Close {
        match code {
            Some(c @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => Close::Echo(c),
            _ => Close::Normal,
        }
    }

    pub fn code(self) -> u16 {
        match self {
            Close::Normal => 1000,
            Close::Echo(c) => c,
            Close::GoingAway => 1001,
            Close::ProtocolError => 1002,
            Close::InvalidPayload => 1007,
            Close::Unavailable => 1011,
            Close::HeartbeatTimeout => 4000,
            Close::TokenExpired => 4001,
            Close::TooSlow => 4008,
            Close::FrameTooBig => 4009,
        }
    }

    /// The reason sent with the code.
    pub fn reason(self) -> &'static str {
        match self {
            Close::Normal | Close::Echo(_) => "",
            Close::GoingAway => "server shutting down: resume elsewhere",
            Close::ProtocolError => "protocol error",
            Close::InvalidPayload => "text frames must be UTF-8",
            Close::Unavailable => "storage or bus unavailable: resume later",
            Close::HeartbeatTimeout => "heartbeat timeout",
            Close::TokenExpired => "token expired",
            Close::TooSlow => "too slow: resume",
            Close::FrameTooBig => "frame too big",
        }
    }

    /// What the client should do next.
    pub fn then(self) -> Then {
        match self {
            Close::Normal | Close::Echo(_) => Then::Nothing,
            Close::GoingAway | Close::Unavailable | Close::HeartbeatTimeout | Close::TooSlow => Then::Resume,
            Close::TokenExpired => Then::Reauthenticate,
            Close::ProtocolError | Close::InvalidPayload | Close::FrameTooBig => Then::Stop,
        }
    }

    /// The close a code stands for, when the hub sends it on its own (kicks carry codes).
    pub fn from_code(code: u16) -> Option<Close> {
        [
            Close::Normal,
            Close::GoingAway,
            Close::ProtocolError,
            Close::InvalidPayload,
            Close::Unavailable,
            Close::HeartbeatTimeout,
            Close::TokenExpired,
            Close::TooSlow,
            Close::FrameTooBig,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn client_frames_parse_into_their_variant_and_anything_else_says_why_not() {
        let ok = [
            (r#"{"type":"ping"}"#, ClientFrame::Ping),
            (
                r#"{"type":"resume","last_event_id":"42"}"#,
                ClientFrame::Resume {
                    last_event_id: "42".into(),
                },
            ),
            (
                r#"{"type":"follow","resource_id":"sam"}"#,
                ClientFrame::Follow {
                    resource_id: Some("sam".into()),
                },
            ),
            (
                r#"{"type":"follow","resource_id":null}"#,
                ClientFrame::Follow { resource_id: None },
            ),
            (
                r#"{"type":"refresh","token":"t"}"#,
                ClientFrame::Refresh { token: "t".into() },
            ),
            (r#"{"type":"ping","sent_at":1}"#, ClientFrame::Ping),
            (
                r#"{"type":"presence","thread_id":"t1","state":"typing"}"#,
                ClientFrame::Presence {
                    thread_id: "t1".into(),
                    state: PresenceState::Typing,
                },
            ),
        ];
        for (text, want) in ok {
            assert_eq!(ClientFrame::parse(text), Ok(want), "{text}");
        }
        let bad = [
            ("not json", "JSON"),
            ("[1]", "client frame"),
            (r#"{"type":"dance"}"#, "dance"),
            (r#"{"kind":"ping"}"#, "type"),
            (r#"{"type":"resume"}"#, "last_event_id"),
            (r#"{"type":"resume","last_event_id":42}"#, "string"),
            (r#"{"type":"follow"}"#, "resource_id"),
            (r#"{"type":"refresh","token":7}"#, "string"),
            (r#"{"type":"presence","thread_id":"t1","state":"asleep"}"#, "asleep"),
            (r#"{"type":"presence","state":"viewing"}"#, "thread_id"),
        ];
        for (text, says) in bad {
            let err = ClientFrame::parse(text).expect_err(text);
            assert!(err.0.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn server_frames_are_the_contracts_shapes() {
        let v = |f: ServerFrame<'_>| serde_json::from_str::<Value>(&f.encode()).unwrap();
        assert_eq!(
            v(ServerFrame::Hello {
                session_id: "s_1",
                user_id: "sam",
                unread_count: 3,
                last_event_id: "9".into()
            }),
            json!({"type": "hello", "session_id": "s_1", "user_id": "sam", "unread_count": 3, "last_event_id": "9"})
        );
        assert_eq!(v(ServerFrame::Pong), json!({"type": "pong"}));
        assert_eq!(
            v(ServerFrame::Resumed { replayed: 2 }),
            json!({"type": "resumed", "replayed": 2})
        );
        assert_eq!(v(ServerFrame::Resync), json!({"type": "resync"}));
        assert_eq!(
            v(ServerFrame::Error {
                code: ErrorCode::RateLimited,
                message: "slow down"
            }),
            json!({"type": "error", "code": "rate_limited", "message": "slow down"})
        );
        let e: Value = serde_json::from_str(&event_frame(EventKind::ThreadRead, 7, r#"{"thread_id":"t1"}"#)).unwrap();
        assert_eq!(
            e,
            json!({"type": "thread.read", "id": "7", "data": {"thread_id": "t1"}})
        );
        let c: Value = serde_json::from_str(&count_frame(8, 5)).unwrap();
        assert_eq!(c, json!({"type": "unread.count", "id": "8", "data": {"count": 5}}));
        let users = json!([{"user_id": "dana", "name": "Dana", "state": "typing"}]);
        let p: Value = serde_json::from_str(&presence_frame("t1", &users)).unwrap();
        assert_eq!(
            p,
            json!({"type": "presence", "data": {"thread_id": "t1", "users": users}})
        );
    }

    #[test]
    fn each_close_code_says_what_the_client_does_next() {
        let cases = [
            (Close::GoingAway, 1001, Then::Resume),
            (Close::Unavailable, 1011, Then::Resume),
            (Close::HeartbeatTimeout, 4000, Then::Resume),
            (Close::TooSlow, 4008, Then::Resume),
            (Close::TokenExpired, 4001, Then::Reauthenticate),
            (Close::ProtocolError, 1002, Then::Stop),
            (Close::InvalidPayload, 1007, Then::Stop),
            (Close::FrameTooBig, 4009, Then::Stop),
            (Close::Normal, 1000, Then::Nothing),
        ];
        for (close, code, then) in cases {
            assert_eq!((close.code(), close.then()), (code, then), "{close:?}");
            assert_eq!(Close::from_code(code), Some(close));
        }
        assert_eq!(Close::echo(Some(4321)).code(), 4321);
        assert_eq!(Close::echo(Some(1005)), Close::Normal, "not sendable");
        assert_eq!(Close::echo(None), Close::Normal);
    }
}
