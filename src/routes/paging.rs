//! The paged lists at the edge: `limit` and `before` parsed from the query (a `before` is
//! opened with the deployment's key, for the list the request names), and the store's page
//! answered with its next position sealed into a `next` cursor (`crate::cursor`).

use serde::Serialize;

use super::input::Query;
use crate::{
    cursor::{Cursor, Cursors, List, Position},
    domain::{
        TenantId,
        model::{Message, MessagePage, Thread, ThreadPage},
    },
    error::ApiError,
    store::Paging,
};

/// `limit` when the query has none.
const DEFAULT_LIMIT: usize = 50;
/// The largest `limit`.
const MAX_LIMIT: usize = 200;

/// `limit`: 1–200, 50 when absent.
pub fn limit(q: &Query) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(
                "limit",
                format!("must be a whole number from 1 to {MAX_LIMIT}"),
            )),
        },
    }
}

/// `before`: the position in a cursor this deployment handed out for `list`, if any.
pub fn before<P: Position>(
    q: &Query,
    cursors: &Cursors,
    tenant: &TenantId,
    list: List<'_>,
) -> Result<Option<P>, ApiError> {
    q.get("before")
        .filter(|s| !s.is_empty())
        .map(|s| {
            cursors
                .open(tenant, list, s)
                .map_err(|e| ApiError::invalid("before", e))
        })
        .transpose()
}

/// `limit` and `before` of a message list.
pub fn messages(q: &Query, cursors: &Cursors, tenant: &TenantId, list: List<'_>) -> Result<Paging, ApiError> {
    Ok(Paging {
        limit: limit(q)?,
        before: before(q, cursors, tenant, list)?,
    })
}

/// `{"threads": [Thread], "next": CURSOR|null}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ThreadList {
    pub threads: Vec<Thread>,
    /// Send it back as `before` for the next page; null on the last.
    #[schema(value_type = Option<String>)]
    pub next: Option<Cursor>,
}

impl ThreadList {
    pub fn new(page: ThreadPage, cursors: &Cursors, tenant: &TenantId) -> Self {
        ThreadList {
            threads: page.threads,
            next: page.next.map(|p| cursors.seal(tenant, List::Threads, &p)),
        }
    }
}

/// `{"messages": [Message], "next": CURSOR|null}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageList {
    pub messages: Vec<Message>,
    /// Send it back as `before` for the older page; null on the last.
    #[schema(value_type = Option<String>)]
    pub next: Option<Cursor>,
}

impl MessageList {
    pub fn new(page: MessagePage, cursors: &Cursors, tenant: &TenantId, list: List<'_>) -> Self {
        MessageList {
            messages: page.messages,
            next: page.next.map(|p| cursors.seal(tenant, list, &p)),
        }
    }
}
