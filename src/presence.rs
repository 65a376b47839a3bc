//! Presence: who is viewing or typing in which thread, on every node, as this node knows it.
//!
//! The `Board` holds, per tenant and thread, one entry per session that is there (`Origin`:
//! which node, which session on it), with the user, their name and what they do. It is state,
//! not history: nothing of it is logged or replayed. A session is in at most one thread: a new
//! place replaces its old one, and `None` (idle, closed) removes it.
//!
//! What sessions see of a thread is its users, each once with their most active state
//! (`typing` over `viewing`), and they see it at most twice a second: a change within
//! `MIN_INTERVAL` of the thread's last frame is held until that interval has passed, and the
//! frame then carries the latest state (`Due`). The board decides that; the hub sends.
//!
//! Pure: the clock comes in as an argument, so the rules are table-tested.

use std::{collections::HashMap, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::domain::{LocationId, TenantId, ThreadId, UserId};

/// The least time between two frames of one thread.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// What a user does in a thread; `Typing` outranks `Viewing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    Viewing,
    Typing,
}

/// A session anywhere in the cluster: its node and its key there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    pub node: String,
    pub session: u64,
}

/// Who is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Present {
    pub user: UserId,
    /// The name to show (the directory's, else the token's); `None`: show the id.
    pub name: Option<String>,
    pub activity: Activity,
}

/// Where a session is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub thread: ThreadId,
    pub location: LocationId,
    pub present: Present,
}

/// When a thread's frame goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub thread: ThreadId,
    /// Now, or the end of the thread's interval.
    pub at: Instant,
}

/// One user in a thread's frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserPresence {
    pub user_id: UserId,
    pub name: Option<String>,
    pub state: Activity,
}

#[derive(Debug)]
struct Thread {
    location: LocationId,
    here: HashMap<Origin, Present>,
    /// When the last frame went out.
    sent: Option<Instant>,
    /// A frame is scheduled (`Due` in the future was handed out): changes meanwhile join it.
    scheduled: bool,
}

#[derive(Debug, Default)]
struct Tenant {
    threads: HashMap<ThreadId, Thread>,
    /// Where each session is.
    at: HashMap<Origin, ThreadId>,
}

#[derive(Debug, Default)]
pub struct Board {
    tenants: HashMap<TenantId, Tenant>,
    /// When each other node last told its picture of a tenant (`replace_node`); its
    /// sessions there are forgotten `NODE_TTL` after that.
    heard: HashMap<(TenantId, String), Instant>,
}

/// How long another node's picture of a tenant holds without being told again: a node that
/// died is gone from every thread this long after its last word (plus up to a second until
/// the next expiry check and half a second of frame interval: within the 15 s the protocol
/// promises). Nodes repeat theirs at a third of it (`bus::presence`).
pub const NODE_TTL: Duration = Duration::from_secs(12);

impl Board {
    /// `origin` is now at `place` (`None`: nowhere). Returns the frames this makes due: the
    /// threads it left and entered whose users changed, each now or at the end of its interval
    /// (none for a thread whose frame is already scheduled: it will carry this change).
    pub fn set(&mut self, tenant: &TenantId, origin: Origin, place: Option<Place>, now: Instant) -> Vec<Due> {
        if place.is_none() && !self.tenants.get(tenant).is_some_and(|t| t.at.contains_key(&origin)) {
            // Nowhere, and it was nowhere: nothing changes (and no tenant entry is made).
            return Vec::new();
        }
        let t = self.tenants.entry(tenant.clone()).or_default();
        let mut touched: Vec<ThreadId> = Vec::new();
        let before = t.at.get(&origin).cloned();
        let same_thread = matches!((&before, &place), (Some(b), Some(p)) if *b == p.thread);
        if let Some(old) = before.filter(|_| !same_thread) {
            t.at.remove(&origin);
            if let Some(th) = t.threads.get_mut(&old) {
                let users = aggregate(&th.here);
                th.here.remove(&origin);
                if aggregate(&th.here) != users {
                    touched.push(old);
                }
            }
        }
        if let Some(p) = place {
            let th = t.threads.entry(p.thread.clone()).or_insert_with(|| Thread {
                location: p.location.clone(),
                here: HashMap::new(),
                sent: None,
                scheduled: false,
            });
            let users = aggregate(&th.here);
            th.here.insert(origin.clone(), p.present);
            if aggregate(&th.here) != users {
                touched.push(p.thread.clone());
            }
            t.at.insert(origin, p.thread);
        }
        let mut due = Vec::new();
        for thread in touched {
            // unwrap: every touched thread is on the board (an emptied one stays until its
            // frame with no user went out, `sent`).
            let th = t.threads.get_mut(&thread).unwrap();
            if th.scheduled {
                continue;
            }
            let at = match th.sent {
                Some(last) if now < last + MIN_INTERVAL => {
                    th.scheduled = true;
                    last + MIN_INTERVAL
                }
                _ => now,
            };
            due.push(Due { thread, at });
        }
        due
    }

    /// Another node's whole picture of `tenant`: its sessions there are at `places` (by
    /// session key) and nowhere else. As `set` for each session that moved, came or went;
    /// it holds for `NODE_TTL` unless told again.
    pub fn replace_node(&mut self, tenant: &TenantId, node: &str, places: Vec<(u64, Place)>, now: Instant) -> Vec<Due> {
        let key = (tenant.clone(), node.to_owned());
        if places.is_empty() {
            self.heard.remove(&key);
        } else {
            self.heard.insert(key, now);
        }
        let kept: Vec<u64> = places.iter().map(|(session, _)| *session).collect();
        let gone: Vec<Origin> = self
            .tenants
            .get(tenant)
            .map(|t| {
                t.at.keys()
                    .filter(|o| o.node == node && !kept.contains(&o.session))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut due = Vec::new();
        for origin in gone {
            due.extend(self.set(tenant, origin, None, now));
        }
        for (session, place) in places {
            let origin = Origin {
                node: node.to_owned(),
                session,
            };
            due.extend(self.set(tenant, origin, Some(place), now));
        }
        due
    }

    /// Forgets the sessions of every node whose picture of a tenant is older than `NODE_TTL`
    /// (the node died or lost its way to this one): as `set` to nowhere for each.
    pub fn expire(&mut self, now: Instant) -> Vec<(TenantId, Due)> {
        let stale: Vec<(TenantId, String)> = self
            .heard
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= NODE_TTL)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for (tenant, node) in stale {
            self.heard.remove(&(tenant.clone(), node.clone()));
            let gone: Vec<Origin> = self
                .tenants
                .get(&tenant)
                .map(|t| t.at.keys().filter(|o| o.node == node).cloned().collect())
                .unwrap_or_default();
            for origin in gone {
                out.extend(
                    self.set(&tenant, origin, None, now)
                        .into_iter()
                        .map(|d| (tenant.clone(), d)),
                );
            }
        }
        out
    }

    /// The frame of `thread` going out now: its location and users (the empty list when
    /// nobody is left, after which the thread leaves the board). `None` for a thread the
    /// board does not hold.
    pub fn send(
        &mut self,
        tenant: &TenantId,
        thread: &ThreadId,
        now: Instant,
    ) -> Option<(LocationId, Vec<UserPresence>)> {
        let t = self.tenants.get_mut(tenant)?;
        let th = t.threads.get_mut(thread)?;
        th.sent = Some(now);
        th.scheduled = false;
        let out = (th.location.clone(), aggregate(&th.here));
        if th.here.is_empty() {
            t.threads.remove(thread);
            if t.threads.is_empty() && t.at.is_empty() {
                self.tenants.remove(tenant);
            }
        }
        Some(out)
    }

    /// Every thread of `tenant` at one of `locations` where someone is, with its users.
    pub fn snapshot(&self, tenant: &TenantId, locations: &[LocationId]) -> Vec<(ThreadId, Vec<UserPresence>)> {
        let Some(t) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let mut out: Vec<(ThreadId, Vec<UserPresence>)> = t
            .threads
            .iter()
            .filter(|(_, th)| !th.here.is_empty() && locations.contains(&th.location))
            .map(|(id, th)| (id.clone(), aggregate(&th.here)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Where `origin` is, if anywhere.
    pub fn place_of(&self, tenant: &TenantId, origin: &Origin) -> Option<(ThreadId, LocationId)> {
        let t = self.tenants.get(tenant)?;
        let thread = t.at.get(origin)?;
        Some((thread.clone(), t.threads.get(thread)?.location.clone()))
    }

    /// The places of `node`'s sessions in `tenant`, by session key (what the node tells the
    /// others), in session order.
    pub fn places_of(&self, tenant: &TenantId, node: &str) -> Vec<(u64, Place)> {
        let Some(t) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let mut out: Vec<(u64, Place)> =
            t.at.iter()
                .filter(|(o, _)| o.node == node)
                .filter_map(|(origin, thread)| {
                    let th = t.threads.get(thread)?;
                    let present = th.here.get(origin)?;
                    Some((
                        origin.session,
                        Place {
                            thread: thread.clone(),
                            location: th.location.clone(),
                            present: present.clone(),
                        },
                    ))
                })
                .collect();
        out.sort_by_key(|(session, _)| *session);
        out
    }

    /// The tenants where `node` has a session in some thread.
    pub fn tenants_of(&self, node: &str) -> Vec<TenantId> {
        self.tenants
            .iter()
            .filter(|(_, t)| t.at.keys().any(|o| o.node == node))
            .map(|(tenant, _)| tenant.clone())
            .collect()
    }
}

/// A thread's users: each once, with their most active state and a name one of their
/// sessions gave, by user id.
fn aggregate(here: &HashMap<Origin, Present>) -> Vec<UserPresence> {
    let mut users: HashMap<&UserId, UserPresence> = HashMap::new();
    for p in here.values() {
        let u = users.entry(&p.user).or_insert_with(|| UserPresence {
            user_id: p.user.clone(),
            name: p.name.clone(),
            state: p.activity,
        });
        u.state = u.state.max(p.activity);
        if u.name.is_none() {
            u.name = p.name.clone();
        }
    }
    let mut out: Vec<UserPresence> = users.into_values().collect();
    out.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Id;

    fn id<T: Id>(s: &str) -> T {
        T::parse(s).unwrap()
    }

    fn origin(node: &str, session: u64) -> Origin {
        Origin {
            node: node.into(),
            session,
        }
    }

    fn place(thread: &str, user: &str, activity: Activity) -> Option<Place> {
        Some(Place {
            thread: id(thread),
            location: id("L1"),
            present: Present {
                user: id(user),
                name: Some(format!("{user}'s name")),
                activity,
            },
        })
    }

    fn states(board: &mut Board, thread: &str, now: Instant) -> Vec<(String, Activity)> {
        board
            .send(&id("acme"), &id(thread), now)
            .map(|(_, users)| users.into_iter().map(|u| (u.user_id.to_string(), u.state)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_user_in_several_sessions_shows_once_with_the_most_active_state() {
        let (mut b, t0, acme) = (Board::default(), Instant::now(), id("acme"));
        b.set(&acme, origin("n1", 1), place("t1", "dana", Activity::Viewing), t0);
        b.set(&acme, origin("n2", 7), place("t1", "dana", Activity::Typing), t0);
        b.set(&acme, origin("n1", 2), place("t1", "sam", Activity::Viewing), t0);
        assert_eq!(
            states(&mut b, "t1", t0),
            [
                ("dana".to_owned(), Activity::Typing),
                ("sam".to_owned(), Activity::Viewing)
            ]
        );
    }

    #[test]
    fn moving_leaves_the_old_thread_and_idle_or_closing_leaves_it_empty() {
        let (mut b, t0, acme) = (Board::default(), Instant::now(), id("acme"));
        let due = b.set(&acme, origin("n1", 1), place("t1", "dana", Activity::Viewing), t0);
        assert_eq!(
            due,
            [Due {
                thread: id("t1"),
                at: t0
            }]
        );
        states(&mut b, "t1", t0);
        let t1 = t0 + Duration::from_secs(1);
        let due = b.set(&acme, origin("n1", 1), place("t2", "dana", Activity::Viewing), t1);
        let threads: Vec<&str> = due.iter().map(|d| d.thread.as_str()).collect();
        assert_eq!(threads, ["t1", "t2"], "left one, entered the other");
        assert!(states(&mut b, "t1", t1).is_empty(), "the empty list: nobody is there");
        assert!(
            b.send(&acme, &id("t1"), t1).is_none(),
            "an emptied thread leaves the board"
        );
        let due = b.set(&acme, origin("n1", 1), None, t1);
        assert_eq!(
            due,
            [Due {
                thread: id("t2"),
                at: t1
            }]
        );
        assert!(states(&mut b, "t2", t1).is_empty());
        assert!(b.snapshot(&acme, &[id("L1")]).is_empty());
    }

    #[test]
    fn changes_within_half_a_second_of_a_frame_wait_for_one_frame_with_the_latest_state() {
        let (mut b, t0, acme) = (Board::default(), Instant::now(), id("acme"));
        b.set(&acme, origin("n1", 1), place("t1", "dana", Activity::Viewing), t0);
        states(&mut b, "t1", t0);
        // A burst of 20 changes in the next 100 ms.
        let mut due = Vec::new();
        for i in 0..20u64 {
            let activity = if i % 2 == 0 {
                Activity::Typing
            } else {
                Activity::Viewing
            };
            due.extend(b.set(
                &acme,
                origin("n1", 1),
                place("t1", "dana", activity),
                t0 + Duration::from_millis(5 * i),
            ));
        }
        assert_eq!(
            due,
            [Due {
                thread: id("t1"),
                at: t0 + MIN_INTERVAL
            }],
            "one frame, later"
        );
        assert_eq!(
            states(&mut b, "t1", t0 + MIN_INTERVAL),
            [("dana".to_owned(), Activity::Viewing)],
            "the latest state"
        );
    }

    #[test]
    fn a_change_that_leaves_the_users_as_they_were_sends_nothing() {
        let (mut b, t0, acme) = (Board::default(), Instant::now(), id("acme"));
        b.set(&acme, origin("n1", 1), place("t1", "dana", Activity::Typing), t0);
        states(&mut b, "t1", t0);
        let t1 = t0 + Duration::from_secs(1);
        let due = b.set(&acme, origin("n1", 2), place("t1", "dana", Activity::Viewing), t1);
        assert!(due.is_empty(), "dana is typing in another session already");
    }

    fn at(thread: &str, location: &str, user: &str, activity: Activity) -> Place {
        Place {
            thread: id(thread),
            location: id(location),
            present: Present {
                user: id(user),
                name: None,
                activity,
            },
        }
    }

    #[test]
    fn another_nodes_picture_replaces_the_last_one_and_the_snapshot_filters_by_location() {
        let (mut b, t0, acme) = (Board::default(), Instant::now(), id("acme"));
        b.set(&acme, origin("n1", 1), place("t1", "dana", Activity::Viewing), t0);
        let due = b.replace_node(
            &acme,
            "n2",
            vec![
                (1, at("t1", "L1", "sam", Activity::Viewing)),
                (2, at("t9", "L9", "lee", Activity::Typing)),
            ],
            t0,
        );
        assert_eq!(due.len(), 2, "t1 and t9 changed: {due:?}");
        let snap = b.snapshot(&acme, &[id("L1")]);
        assert_eq!(snap.len(), 1, "t9 is at L9");
        assert_eq!(snap[0].1.len(), 2);
        assert_eq!(b.places_of(&acme, "n2").len(), 2);
        assert_eq!(b.tenants_of("n2"), std::slice::from_ref(&acme));
        assert_eq!(
            b.places_of(&acme, "n1"),
            [(1, place("t1", "dana", Activity::Viewing).unwrap())]
        );

        // Told again with sam gone and lee unchanged: only t1 changes.
        let t1 = t0 + Duration::from_secs(1);
        let due = b.replace_node(&acme, "n2", vec![(2, at("t9", "L9", "lee", Activity::Typing))], t1);
        assert_eq!(due.iter().map(|d| d.thread.as_str()).collect::<Vec<_>>(), ["t1"]);
        // Told the same again: nothing.
        let due = b.replace_node(&acme, "n2", vec![(2, at("t9", "L9", "lee", Activity::Typing))], t1);
        assert!(due.is_empty(), "{due:?}");
    }

    #[test]
    fn a_node_not_heard_for_its_ttl_is_forgotten_and_one_heard_again_is_kept() {
        let (mut b, t0, acme) = (Board::default(), Instant::now(), id("acme"));
        b.set(&acme, origin("n1", 1), place("t1", "dana", Activity::Viewing), t0);
        b.replace_node(&acme, "n2", vec![(1, at("t1", "L1", "sam", Activity::Viewing))], t0);
        b.replace_node(&acme, "n3", vec![(1, at("t1", "L1", "lee", Activity::Viewing))], t0);
        assert!(b.expire(t0 + NODE_TTL - Duration::from_millis(1)).is_empty());
        // n3 speaks again a little later; n2 does not.
        b.replace_node(
            &acme,
            "n3",
            vec![(1, at("t1", "L1", "lee", Activity::Viewing))],
            t0 + NODE_TTL / 3,
        );
        let due = b.expire(t0 + NODE_TTL);
        assert_eq!(due.len(), 1, "{due:?}");
        let users: Vec<String> = b.snapshot(&acme, &[id("L1")])[0]
            .1
            .iter()
            .map(|u| u.user_id.as_str().to_owned())
            .collect();
        assert_eq!(
            users,
            ["dana", "lee"],
            "sam's node went quiet; this node's own sessions never expire"
        );
        assert!(b.expire(t0 + NODE_TTL * 2).len() == 1, "then n3's turn");
    }
}
