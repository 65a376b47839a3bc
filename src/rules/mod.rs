//! The Message Center's rules, as plain functions over plain data (no I/O).
//!
//! - **Audience** of a thread: its folder's sales resource (unless the tenant turned
//!   `notify_sales_resource` off), its service resource (likewise), and every user with
//!   `subscribe_all` on — always only users whose token grants the thread's location. An
//!   operator who is none of these is not notified and does not list the thread as "mine";
//!   the folder's Communications tab stays open to everyone granted its location.
//! - **Resource view** (the drop-down): threads on folders where U is a *notified* resource.
//! - **Auto-assignment**: an unassigned thread takes the folder when exactly one folder at the
//!   thread's location lists the customer's number; none or several leave it unassigned
//!   (re-tried on the next inbound). An assigned thread keeps its folder. A thread is only
//!   ever on a folder of its own location (`assignable`).
//! - **Read state** is shared per thread and moves only on an inbound message, a reply,
//!   mark-read and mark-unread.
//! - **Unread count** of a user: the sum of `unread_count` over their "mine" view. A change
//!   that moves counts sends `unread.count` to exactly the users whose count it moved
//!   (`count_route`, `moved`); when it moves every one of them by the same known amount (an
//!   inbound message, `count_delta`), the event carries that amount so that sessions add it
//!   instead of reading the count again.
//! - **Delivery**: who receives an event (`receives`), live and on replay alike.
//! - **Lists in a query**: `audience_filter` states `listed` as conditions on a thread's
//!   location and its folder's resource columns, for a store that filters in its query
//!   (PostgreSQL) instead of thread by thread.
//!
//! Store implementations and the hub call these; nobody re-derives a rule elsewhere. `plan`
//! (beside this file) puts them together per mutating call: what each change stores and which
//! events it emits. Neither imports anything but `domain` and `event`.

pub mod plan;

use crate::{
    domain::{FolderId, LocationId, UserId, model::Preferences},
    event::Route,
};

/// The two resources of a folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub sales: Option<UserId>,
    pub service: Option<UserId>,
}

/// The resources of a folder whom the tenant's preferences notify, without duplicates.
pub fn notified(resources: &Resources, prefs: Preferences) -> Vec<UserId> {
    let mut out = Vec::with_capacity(2);
    if prefs.notify_sales_resource {
        out.extend(resources.sales.clone());
    }
    if prefs.notify_service_resource {
        if let Some(s) = &resources.service {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
    }
    out
}

/// Who a viewer is, as far as the rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer<'a> {
    pub user: &'a UserId,
    pub locations: &'a [LocationId],
    pub subscribe_all: bool,
}

/// Whether a thread at `location`, whose folder notifies `notified`, is in the viewer's
/// audience (their "mine" view).
pub fn in_audience(viewer: &Viewer<'_>, location: &LocationId, notified: &[UserId]) -> bool {
    viewer.locations.contains(location) && (viewer.subscribe_all || notified.contains(viewer.user))
}

/// Whether a thread at `location`, whose folder notifies `notified`, is in the resource view
/// of `resource` as seen by a viewer granted `locations`.
pub fn in_resource_view(
    locations: &[LocationId],
    resource: &UserId,
    location: &LocationId,
    notified: &[UserId],
) -> bool {
    locations.contains(location) && notified.contains(resource)
}

/// The route of an event about a thread: its audience, and followers of its resources.
pub fn thread_route(location: &LocationId, notified: &[UserId]) -> Route {
    Route {
        location: Some(location.clone()),
        users: notified.to_vec(),
        resources: notified.to_vec(),
        subscribers: true,
        ..Route::default()
    }
}

/// The route of `message.sent` (a reply): the thread's audience, and every `service`
/// session of the tenant, which sends the SMS.
pub fn sent_route(thread_route: &Route) -> Route {
    Route {
        services: true,
        ..thread_route.clone()
    }
}

/// The route of an event that concerns two audiences at once (a re-assignment).
pub fn union_route(a: Route, b: &Route) -> Route {
    let mut r = a;
    for u in &b.users {
        if !r.users.contains(u) {
            r.users.push(u.clone());
        }
    }
    for u in &b.resources {
        if !r.resources.contains(u) {
            r.resources.push(u.clone());
        }
    }
    r.subscribers |= b.subscribers;
    r.services |= b.services;
    r
}

/// The route of the `unread.count` that follows a change of a thread's unread state: the
/// users whose "mine" view holds the thread (not followers, not services).
pub fn count_route(thread_route: &Route) -> Route {
    Route {
        resources: Vec::new(),
        services: false,
        ..thread_route.clone()
    }
}

/// The route of the `unread.count` that follows re-assigning a thread at `location` (unread
/// when `unread`) from a folder notifying `before` to one notifying `after`: the resources
/// who joined or left its audience. Subscribers keep the thread either way. `None` when no
/// count moves.
pub fn reassignment_count_route(
    location: &LocationId,
    unread: bool,
    before: &[UserId],
    after: &[UserId],
) -> Option<Route> {
    let users = moved(before, after);
    (unread && !users.is_empty()).then(|| Route {
        location: Some(location.clone()),
        users,
        ..Route::default()
    })
}

/// Users notified before or after a change but not both: those whose "mine" view (and so
/// unread count) a change of resources or preferences moves.
pub fn moved(before: &[UserId], after: &[UserId]) -> Vec<UserId> {
    let mut out: Vec<UserId> = before.iter().filter(|u| !after.contains(u)).cloned().collect();
    out.extend(after.iter().filter(|u| !before.contains(u)).cloned());
    out
}

/// The users whose count a preference change moves: resources of folders with unread threads
/// who are notified under one setting and not the other. `folders` lists those folders'
/// resources.
pub fn moved_by_preferences(folders: &[Resources], before: Preferences, after: Preferences) -> Vec<UserId> {
    let mut out: Vec<UserId> = Vec::new();
    for r in folders {
        for u in moved(&notified(r, before), &notified(r, after)) {
            if !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}

/// Whether a thread at `location` whose folder notifies `notified` is listed: in the viewer's
/// "mine" view, or with `resource`, in that resource's view (the drop-down).
pub fn listed(viewer: &Viewer<'_>, resource: Option<&UserId>, location: &LocationId, notified: &[UserId]) -> bool {
    match resource {
        None => in_audience(viewer, location, notified),
        Some(u) => in_resource_view(viewer.locations, u, location, notified),
    }
}

/// Which threads a list (or an unread count) shows, as conditions a store can evaluate
/// inside its query rather than thread by thread: the decision `listed` makes, put in terms
/// of the thread's location and its folder's two resource columns. `audience_filter`
/// derives it; `matches` is its meaning, and agrees with `listed` on every thread
/// (`an_audience_filter_matches_exactly_the_threads_listed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceFilter<'a> {
    /// Only threads at one of these locations.
    pub locations: &'a [LocationId],
    /// Every thread at those locations (a subscribe-all viewer's "mine"); when false, only
    /// threads on a folder where `resource` is in a column below.
    pub all: bool,
    /// The user whose folders count: the viewer ("mine") or the resource of the drop-down.
    pub resource: &'a UserId,
    /// Whether a folder whose sales resource is `resource` counts.
    pub sales: bool,
    /// Whether a folder whose service resource is `resource` counts.
    pub service: bool,
}

impl AudienceFilter<'_> {
    /// Whether a thread at `location`, on a folder with `resources` (default: no folder),
    /// passes the filter.
    pub fn matches(&self, location: &LocationId, resources: &Resources) -> bool {
        let on_folder = (self.sales && resources.sales.as_ref() == Some(self.resource))
            || (self.service && resources.service.as_ref() == Some(self.resource));
        self.locations.contains(location) && (self.all || on_folder)
    }

    /// Whether no thread can pass (no location, or no column counts): a store answers
    /// without a query.
    pub fn is_empty(&self) -> bool {
        self.locations.is_empty() || !(self.all || self.sales || self.service)
    }
}

/// The filter of the threads `listed` shows the viewer: their "mine" view (`resource` is
/// `None`), or `resource`'s view (the drop-down), under the tenant's preferences.
pub fn audience_filter<'a>(
    viewer: &Viewer<'a>,
    resource: Option<&'a UserId>,
    prefs: Preferences,
) -> AudienceFilter<'a> {
    AudienceFilter {
        locations: viewer.locations,
        // Subscribing to everything widens one's own audience, not another resource's view.
        all: resource.is_none() && viewer.subscribe_all,
        resource: resource.unwrap_or(viewer.user),
        sales: prefs.notify_sales_resource,
        service: prefs.notify_service_resource,
    }
}

/// The folder an inbound message's thread at `location` ends up with. `folders_listing_number`
/// holds every folder that lists the customer's number, with the folder's location: only those
/// at the thread's own location count (a folder elsewhere would show the thread to users of
/// another location).
pub fn auto_assign(
    current: Option<FolderId>,
    location: &LocationId,
    folders_listing_number: &[(FolderId, LocationId)],
) -> Option<FolderId> {
    current.or_else(|| {
        let mut here = folders_listing_number.iter().filter(|(_, at)| at == location);
        match (here.next(), here.next()) {
            (Some((only, _)), None) => Some(only.clone()),
            _ => None,
        }
    })
}

/// Whether a thread at `thread_location` may be assigned a folder at `folder_location`: only
/// a folder of the thread's own location.
pub fn assignable(thread_location: &LocationId, folder_location: &LocationId) -> bool {
    thread_location == folder_location
}

/// What may change a thread's read state. Nothing else does (not assignment, not linking
/// images, not directory changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadChange {
    Inbound,
    Reply,
    MarkRead,
    MarkUnread,
}

/// The thread's `unread_count` after `change`: the inbound messages since it was last read.
/// A thread is unread exactly when this is above zero.
pub fn next_unread_count(count: u32, change: ReadChange) -> u32 {
    match change {
        ReadChange::Inbound => count.saturating_add(1),
        ReadChange::Reply | ReadChange::MarkRead => 0,
        ReadChange::MarkUnread => count.max(1),
    }
}

/// By how much `change` moves the unread count of **every** recipient of the `unread.count`
/// that follows it, when that is one known amount; `None` when the recipients must recompute.
///
/// `unread_before` is the thread's `unread_count` before the change; `notified_before` and
/// `notified_after` are the notified resources of its folder before and after (an inbound
/// message may auto-assign an unassigned thread).
///
/// Why it is exact for an inbound message. The `unread.count` goes by
/// `count_route(thread_route(location, notified_after))`, so by `receives` a session gets it
/// exactly when it is granted the thread's location and is a notified resource or has
/// `subscribe_all` on: exactly when the thread is in its "mine" view after the change. Its
/// count is `unread_total` over that view; the inbound message touches one thread, whose
/// `unread_count` goes from `unread_before` to `next_unread_count(unread_before, Inbound)`
/// (one more). So a recipient who had the thread in view before moves by one, and a recipient
/// who had not (a resource who joined through the auto-assignment) moves by the whole new
/// count, which is also one when the thread was read before. Hence `Some(1)` unless somebody
/// joined an unread thread's audience, and then `None`. Nobody leaves the audience on an
/// inbound message (`auto_assign` keeps an assigned folder), and everyone else's view lacks
/// the thread before and after: their counts do not move, and they get no event.
///
/// Every other change (a read, an unread, a reply, an assignment, a directory, preference or
/// subscription change) moves counts by amounts that differ per recipient or that the writer
/// does not know; its `unread.count` says "recompute" (`None`).
/// `a_count_delta_is_exactly_how_far_every_recipients_count_moves` checks all of this.
pub fn count_delta(
    change: ReadChange,
    unread_before: u32,
    notified_before: &[UserId],
    notified_after: &[UserId],
) -> Option<i64> {
    if change != ReadChange::Inbound {
        return None;
    }
    let joined = notified_after.iter().any(|u| !notified_before.contains(u));
    if joined && unread_before > 0 {
        return None;
    }
    let after = next_unread_count(unread_before, change);
    Some(i64::from(after) - i64::from(unread_before))
}

/// A session as delivery sees it.
#[derive(Debug, Clone)]
pub struct Recipient<'a> {
    pub viewer: Viewer<'a>,
    pub is_service: bool,
    pub follow: Option<&'a UserId>,
}

/// Whether a session receives an event with `route` (live and on replay).
pub fn receives(r: &Recipient<'_>, route: &Route) -> bool {
    if r.is_service && route.services {
        return true;
    }
    if let Some(loc) = &route.location {
        if !r.viewer.locations.contains(loc) {
            return false;
        }
    }
    route.users.contains(r.viewer.user)
        || (route.subscribers && r.viewer.subscribe_all)
        || r.follow.is_some_and(|f| route.resources.contains(f))
}

/// A user's unread count: the sum over the threads of their "mine" view.
pub fn unread_total<'t>(
    viewer: &Viewer<'_>,
    threads: impl IntoIterator<Item = (&'t LocationId, &'t [UserId], u32)>,
) -> u64 {
    threads
        .into_iter()
        .filter(|(loc, notified, _)| in_audience(viewer, loc, notified))
        .map(|(_, _, n)| u64::from(n))
        .sum()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::Id;

    fn u(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }
    fn l(s: &str) -> LocationId {
        LocationId::parse(s).unwrap()
    }
    fn f(s: &str) -> FolderId {
        FolderId::parse(s).unwrap()
    }
    #[test]
    fn a_reassignment_moves_the_counts_of_the_resources_who_joined_or_left_an_unread_thread() {
        let (before, after) = ([u("sam"), u("sue")], [u("sue"), u("tom")]);
        let r = reassignment_count_route(&l("L1"), true, &before, &after).expect("counts move");
        assert_eq!(r.users, vec![u("sam"), u("tom")]);
        assert_eq!(r.location, Some(l("L1")));
        assert!(!r.subscribers && !r.services && r.resources.is_empty());
        assert_eq!(
            reassignment_count_route(&l("L1"), false, &before, &after),
            None,
            "read thread"
        );
        assert_eq!(
            reassignment_count_route(&l("L1"), true, &before, &before),
            None,
            "same audience"
        );
    }

    fn prefs(sales: bool, service: bool) -> Preferences {
        Preferences {
            notify_sales_resource: sales,
            notify_service_resource: service,
        }
    }
    fn res(sales: Option<&str>, service: Option<&str>) -> Resources {
        Resources {
            sales: sales.map(u),
            service: service.map(u),
        }
    }

    #[test]
    fn notified_resources_follow_the_tenant_preferences() {
        let cases: &[(Resources, Preferences, &[&str])] = &[
            (res(Some("sam"), Some("sue")), prefs(true, true), &["sam", "sue"]),
            (res(Some("sam"), Some("sue")), prefs(false, true), &["sue"]),
            (res(Some("sam"), Some("sue")), prefs(true, false), &["sam"]),
            (res(Some("sam"), Some("sue")), prefs(false, false), &[]),
            (res(None, Some("sue")), prefs(true, true), &["sue"]),
            (res(Some("sam"), None), prefs(true, true), &["sam"]),
            (res(None, None), prefs(true, true), &[]),
            (res(Some("sam"), Some("sam")), prefs(true, true), &["sam"]),
            (res(Some("sam"), Some("sam")), prefs(false, true), &["sam"]),
        ];
        for (r, p, want) in cases {
            let want: Vec<UserId> = want.iter().map(|s| u(s)).collect();
            assert_eq!(notified(r, *p), want, "{r:?} {p:?}");
        }
    }

    #[test]
    fn the_audience_is_notified_resources_and_subscribers_granted_the_location() {
        let (sam, olga) = (u("sam"), u("olga"));
        let l1 = [l("L1")];
        let l2 = [l("L2")];
        let notified = [sam.clone()];
        let v = |user, locations, subscribe_all| Viewer {
            user,
            locations,
            subscribe_all,
        };
        let cases = [
            (v(&sam, &l1[..], false), true, "the sales resource"),
            (v(&sam, &l2[..], false), false, "a resource without the location"),
            (v(&olga, &l1[..], false), false, "an operator who is no resource"),
            (v(&olga, &l1[..], true), true, "a subscribe-all operator"),
            (
                v(&olga, &l2[..], true),
                false,
                "a subscribe-all operator without the location",
            ),
        ];
        for (viewer, want, what) in cases {
            assert_eq!(in_audience(&viewer, &l("L1"), &notified), want, "{what}");
        }
    }

    #[test]
    fn an_unassigned_thread_has_only_subscribers_as_audience() {
        let sam = u("sam");
        let locs = [l("L1")];
        let viewer = Viewer {
            user: &sam,
            locations: &locs,
            subscribe_all: false,
        };
        assert!(!in_audience(
            &viewer,
            &l("L1"),
            &notified(&Resources::default(), prefs(true, true))
        ));
    }

    #[test]
    fn auto_assignment_needs_exactly_one_folder_at_the_threads_location_and_keeps_an_assigned_one() {
        // The thread is at L1; each listing folder is "F@L".
        let cases: &[(Option<&str>, &[&str], Option<&str>)] = &[
            (None, &[], None),
            (None, &["F1@L1"], Some("F1")),
            (None, &["F1@L1", "F2@L1"], None),
            (None, &["F2@L2"], None),
            (None, &["F1@L1", "F2@L2"], Some("F1")),
            (None, &["F2@L2", "F3@L3"], None),
            (Some("F9"), &[], Some("F9")),
            (Some("F9"), &["F1@L1"], Some("F9")),
            (Some("F9"), &["F1@L1", "F2@L1"], Some("F9")),
        ];
        for (current, listing, want) in cases {
            let listing: Vec<(FolderId, LocationId)> = listing
                .iter()
                .map(|s| {
                    let (folder, location) = s.split_once('@').unwrap();
                    (f(folder), l(location))
                })
                .collect();
            assert_eq!(
                auto_assign(current.map(f), &l("L1"), &listing),
                want.map(f),
                "{current:?} {listing:?}"
            );
        }
    }

    #[test]
    fn a_thread_is_assignable_only_to_a_folder_of_its_own_location() {
        assert!(assignable(&l("L1"), &l("L1")));
        assert!(!assignable(&l("L1"), &l("L2")));
    }

    #[test]
    fn read_state_moves_only_as_the_help_page_says() {
        use ReadChange::*;
        let cases = [
            (0, Inbound, 1),
            (3, Inbound, 4),
            (4, Reply, 0),
            (0, Reply, 0),
            (4, MarkRead, 0),
            (0, MarkUnread, 1),
            (3, MarkUnread, 3),
        ];
        for (before, change, after) in cases {
            assert_eq!(next_unread_count(before, change), after, "{before} {change:?}");
        }
    }

    #[test]
    fn delivery_follows_the_route() {
        let (sam, olga, svc) = (u("sam"), u("olga"), u("svc"));
        let l1 = [l("L1")];
        let route = thread_route(&l("L1"), std::slice::from_ref(&sam));
        let rcpt = |user, subscribe_all, is_service, follow| Recipient {
            viewer: Viewer {
                user,
                locations: &l1[..],
                subscribe_all,
            },
            is_service,
            follow,
        };
        assert!(receives(&rcpt(&sam, false, false, None), &route));
        assert!(!receives(&rcpt(&olga, false, false, None), &route));
        assert!(receives(&rcpt(&olga, true, false, None), &route), "subscribe-all");
        assert!(
            receives(&rcpt(&olga, false, false, Some(&sam)), &route),
            "following sam"
        );
        assert!(
            !receives(&rcpt(&olga, false, false, Some(&olga)), &route),
            "following someone else"
        );
        assert!(
            !receives(&rcpt(&svc, false, true, None), &route),
            "services only for message.sent"
        );
        let sent = Route {
            services: true,
            ..route.clone()
        };
        let none: [LocationId; 0] = [];
        let svc_rcpt = Recipient {
            viewer: Viewer {
                user: &svc,
                locations: &none,
                subscribe_all: false,
            },
            is_service: true,
            follow: None,
        };
        assert!(receives(&svc_rcpt, &sent), "services regardless of locations");
        let l2 = [l("L2")];
        let elsewhere = Recipient {
            viewer: Viewer {
                user: &sam,
                locations: &l2,
                subscribe_all: true,
            },
            is_service: false,
            follow: Some(&sam),
        };
        assert!(!receives(&elsewhere, &route), "never without the location");
        assert!(!receives(
            &rcpt(&sam, false, false, None),
            &count_route(&Route {
                users: vec![],
                ..route.clone()
            })
        ));
    }

    #[test]
    fn a_change_of_resources_moves_the_counts_of_those_who_joined_or_left() {
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&["sam"], &["sam"], &[]),
            (&["sam"], &["sue"], &["sam", "sue"]),
            (&["sam", "sue"], &["sue"], &["sam"]),
            (&[], &["sue"], &["sue"]),
        ];
        for (before, after, want) in cases {
            let v = |xs: &[&str]| xs.iter().map(|s| u(s)).collect::<Vec<_>>();
            assert_eq!(moved(&v(before), &v(after)), v(want), "{before:?} -> {after:?}");
        }
    }

    #[test]
    fn a_preference_change_moves_the_resources_it_notifies_differently() {
        let folders = [
            res(Some("sam"), Some("sue")),
            res(Some("sal"), None),
            res(Some("sam"), None),
        ];
        assert_eq!(
            moved_by_preferences(&folders, prefs(true, true), prefs(false, true)),
            vec![u("sam"), u("sal")]
        );
        assert_eq!(
            moved_by_preferences(&folders, prefs(true, true), prefs(true, true)),
            Vec::<UserId>::new()
        );
        assert_eq!(
            moved_by_preferences(&folders, prefs(true, false), prefs(true, true)),
            vec![u("sue")]
        );
    }

    #[test]
    fn a_thread_is_listed_in_mine_or_in_the_resource_view_asked_for() {
        let (sam, olga) = (u("sam"), u("olga"));
        let locs = [l("L1")];
        let viewer = Viewer {
            user: &olga,
            locations: &locs,
            subscribe_all: false,
        };
        let notified = [sam.clone()];
        assert!(!listed(&viewer, None, &l("L1"), &notified), "not olga's");
        assert!(listed(&viewer, Some(&sam), &l("L1"), &notified), "sam's view");
        assert!(
            !listed(&viewer, Some(&sam), &l("L2"), &notified),
            "outside olga's locations"
        );
    }

    #[test]
    fn an_audience_filter_takes_the_viewers_locations_and_the_columns_the_preferences_notify() {
        let (sam, olga) = (u("sam"), u("olga"));
        let locs = [l("L1"), l("L2")];
        let viewer = |user, subscribe_all| Viewer {
            user,
            locations: &locs,
            subscribe_all,
        };
        // (viewer, subscribe_all, resource view of, preferences, want: all, resource, sales, service).
        type Case<'a> = (
            &'a UserId,
            bool,
            Option<&'a UserId>,
            Preferences,
            (bool, &'a UserId, bool, bool),
        );
        let cases: &[Case<'_>] = &[
            (&sam, false, None, prefs(true, true), (false, &sam, true, true)),
            (&sam, true, None, prefs(true, true), (true, &sam, true, true)),
            (&sam, false, None, prefs(false, true), (false, &sam, false, true)),
            (&sam, false, None, prefs(true, false), (false, &sam, true, false)),
            (&olga, false, Some(&sam), prefs(true, true), (false, &sam, true, true)),
            (&olga, true, Some(&sam), prefs(true, true), (false, &sam, true, true)),
            (
                &olga,
                true,
                Some(&sam),
                prefs(false, false),
                (false, &sam, false, false),
            ),
        ];
        for (user, subscribe_all, resource, p, (all, r, sales, service)) in cases {
            let f = audience_filter(&viewer(user, *subscribe_all), *resource, *p);
            let want = AudienceFilter {
                locations: &locs,
                all: *all,
                resource: r,
                sales: *sales,
                service: *service,
            };
            assert_eq!(f, want, "{user} {subscribe_all} {resource:?} {p:?}");
        }
        let nothing = audience_filter(&viewer(&olga, true), Some(&sam), prefs(false, false));
        assert!(nothing.is_empty(), "a resource view when no resource is notified");
        let none: [LocationId; 0] = [];
        let nowhere = Viewer {
            user: &sam,
            locations: &none,
            subscribe_all: true,
        };
        assert!(
            audience_filter(&nowhere, None, prefs(true, true)).is_empty(),
            "no location"
        );
        assert!(!audience_filter(&viewer(&sam, true), None, prefs(false, false)).is_empty());
    }

    #[test]
    fn a_union_route_reaches_both_audiences_once() {
        let a = thread_route(&l("L1"), &[u("sam")]);
        let b = thread_route(&l("L1"), &[u("sam"), u("sue")]);
        let r = union_route(a, &b);
        assert_eq!(r.users, vec![u("sam"), u("sue")]);
        assert_eq!(r.resources, vec![u("sam"), u("sue")]);
    }

    #[test]
    fn the_unread_total_sums_the_mine_view() {
        let sam = u("sam");
        let locs = [l("L1")];
        let viewer = Viewer {
            user: &sam,
            locations: &locs,
            subscribe_all: false,
        };
        let (l1, l2) = (l("L1"), l("L2"));
        let mine = [sam.clone()];
        let other = [u("sue")];
        let threads = vec![
            (&l1, &mine[..], 2),
            (&l1, &other[..], 5),
            (&l2, &mine[..], 7),
            (&l1, &mine[..], 1),
        ];
        assert_eq!(unread_total(&viewer, threads.clone()), 3);
        let all = Viewer {
            subscribe_all: true,
            ..viewer
        };
        assert_eq!(unread_total(&all, threads), 8);
    }

    #[test]
    fn only_an_inbound_message_carries_a_count_delta_and_not_when_someone_joins_an_unread_thread() {
        use ReadChange::*;
        let sam = [u("sam")];
        let none: [UserId; 0] = [];
        // (change, thread's unread count before, notified before, after, delta, what).
        type Case<'a> = (ReadChange, u32, &'a [UserId], &'a [UserId], Option<i64>, &'a str);
        let cases: &[Case<'_>] = &[
            (Inbound, 0, &none, &none, Some(1), "a new thread, no folder"),
            (
                Inbound,
                0,
                &none,
                &sam,
                Some(1),
                "a new or read thread assigned by this message",
            ),
            (Inbound, 3, &sam, &sam, Some(1), "an assigned unread thread"),
            (
                Inbound,
                3,
                &none,
                &none,
                Some(1),
                "an unassigned unread thread staying so",
            ),
            (
                Inbound,
                2,
                &none,
                &sam,
                None,
                "an unread thread assigned by this message: sam gains 3",
            ),
            (Reply, 2, &sam, &sam, None, "a reply"),
            (MarkRead, 2, &sam, &sam, None, "mark-read"),
            (MarkUnread, 0, &sam, &sam, None, "mark-unread"),
        ];
        for (change, before, nb, na, want, what) in cases {
            assert_eq!(count_delta(*change, *before, nb, na), *want, "{what}");
        }
    }

    fn id_strategy(prefix: &'static str) -> impl Strategy<Value = String> {
        (0..4u8).prop_map(move |n| format!("{prefix}{n}"))
    }

    proptest! {
        #[test]
        fn the_audience_never_holds_a_user_without_the_location(
            user in id_strategy("u"),
            viewer_locs in proptest::collection::vec(id_strategy("L"), 0..3),
            thread_loc in id_strategy("L"),
            sales in proptest::option::of(id_strategy("u")),
            service in proptest::option::of(id_strategy("u")),
            subscribe_all in any::<bool>(),
            p in (any::<bool>(), any::<bool>()),
            follow in proptest::option::of(id_strategy("u")),
        ) {
            let user = u(&user);
            let locs: Vec<LocationId> = viewer_locs.iter().map(|s| l(s)).collect();
            let loc = l(&thread_loc);
            let notified = notified(&Resources { sales: sales.map(|s| u(&s)), service: service.map(|s| u(&s)) }, prefs(p.0, p.1));
            let viewer = Viewer { user: &user, locations: &locs, subscribe_all };
            let follow = follow.map(|s| u(&s));
            let rcpt = Recipient { viewer: viewer.clone(), is_service: false, follow: follow.as_ref() };
            let route = thread_route(&loc, &notified);
            if !locs.contains(&loc) {
                prop_assert!(!in_audience(&viewer, &loc, &notified));
                prop_assert!(!receives(&rcpt, &route));
                prop_assert!(!receives(&rcpt, &count_route(&route)));
            }
            // Whoever is in the audience receives the thread's events and its count changes.
            if in_audience(&viewer, &loc, &notified) {
                prop_assert!(receives(&rcpt, &route));
                prop_assert!(receives(&rcpt, &count_route(&route)));
            }
        }

        /// The filter a store puts in its query shows exactly the threads `listed` shows.
        #[test]
        fn an_audience_filter_matches_exactly_the_threads_listed(
            user in id_strategy("u"),
            viewer_locs in proptest::collection::vec(id_strategy("L"), 0..3),
            thread_loc in id_strategy("L"),
            sales in proptest::option::of(id_strategy("u")),
            service in proptest::option::of(id_strategy("u")),
            subscribe_all in any::<bool>(),
            p in (any::<bool>(), any::<bool>()),
            resource in proptest::option::of(id_strategy("u")),
        ) {
            let user = u(&user);
            let locs: Vec<LocationId> = viewer_locs.iter().map(|s| l(s)).collect();
            let loc = l(&thread_loc);
            let resources = Resources { sales: sales.map(|s| u(&s)), service: service.map(|s| u(&s)) };
            let prefs = prefs(p.0, p.1);
            let viewer = Viewer { user: &user, locations: &locs, subscribe_all };
            let resource = resource.map(|s| u(&s));
            let filter = audience_filter(&viewer, resource.as_ref(), prefs);
            let listed = listed(&viewer, resource.as_ref(), &loc, &notified(&resources, prefs));
            prop_assert_eq!(filter.matches(&loc, &resources), listed);
            if filter.is_empty() {
                prop_assert!(!listed, "an empty filter lists nothing");
            }
        }

        #[test]
        fn a_user_notified_of_a_thread_is_a_resource_the_preferences_allow(
            sales in proptest::option::of(id_strategy("u")),
            service in proptest::option::of(id_strategy("u")),
            p in (any::<bool>(), any::<bool>()),
        ) {
            let r = Resources { sales: sales.map(|s| u(&s)), service: service.map(|s| u(&s)) };
            for n in notified(&r, prefs(p.0, p.1)) {
                prop_assert!((p.0 && r.sales.as_ref() == Some(&n)) || (p.1 && r.service.as_ref() == Some(&n)));
            }
        }

        #[test]
        fn the_unread_count_is_zero_exactly_after_a_read_or_a_reply(
            changes in proptest::collection::vec(0..4u8, 0..40)
        ) {
            let mut count = 0u32;
            for c in changes {
                let change = [ReadChange::Inbound, ReadChange::Reply, ReadChange::MarkRead, ReadChange::MarkUnread][c as usize];
                let before = count;
                count = next_unread_count(count, change);
                match change {
                    ReadChange::Reply | ReadChange::MarkRead => prop_assert_eq!(count, 0),
                    ReadChange::Inbound => prop_assert_eq!(count, before + 1),
                    ReadChange::MarkUnread => prop_assert!(count >= 1 && count >= before),
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The exactness argument of `count_delta`, on random tenants: an inbound message (to
        /// an existing thread or a new one, auto-assigned or not) moves the count of every
        /// session that receives its `unread.count` by exactly the delta, when there is one,
        /// and leaves every other session's count alone.
        #[test]
        fn a_count_delta_is_exactly_how_far_every_recipients_count_moves(
            threads in proptest::collection::vec((0..3u8, proptest::option::of(0..3u8), 0..4u32), 0..6),
            folders in proptest::collection::vec(
                (proptest::option::of(id_strategy("u")), proptest::option::of(id_strategy("u"))), 3),
            p in (any::<bool>(), any::<bool>()),
            user in id_strategy("u"),
            viewer_locs in proptest::collection::vec(0..3u8, 0..3),
            subscribe_all in any::<bool>(),
            follow in proptest::option::of(id_strategy("u")),
            target in any::<proptest::sample::Index>(),
            new_thread_at in proptest::option::weighted(0.2, 0..3u8),
            listing in proptest::collection::btree_set(0..3u8, 0..3),
        ) {
            let loc = |i: u8| l(&format!("L{i}"));
            let folder = |i: u8| f(&format!("F{i}"));
            let resources: Vec<Resources> = folders
                .iter()
                .map(|(sales, service)| Resources { sales: sales.as_deref().map(u), service: service.as_deref().map(u) })
                .collect();
            let prefs = prefs(p.0, p.1);
            // A thread: its location, its folder (an index into `resources`), its unread count.
            let notified_of = |fo: Option<u8>| -> Vec<UserId> {
                fo.map(|i| notified(&resources[usize::from(i)], prefs)).unwrap_or_default()
            };
            let mut rows: Vec<(LocationId, Option<u8>, u32)> =
                threads.iter().map(|(l, fo, n)| (loc(*l), *fo, *n)).collect();
            let user = u(&user);
            let locs: Vec<LocationId> = viewer_locs.iter().map(|i| loc(*i)).collect();
            let viewer = Viewer { user: &user, locations: &locs, subscribe_all };
            let follow = follow.map(|s| u(&s));
            let total = |rows: &[(LocationId, Option<u8>, u32)]| {
                let notified: Vec<Vec<UserId>> = rows.iter().map(|(_, fo, _)| notified_of(*fo)).collect();
                unread_total(&viewer, rows.iter().zip(&notified).map(|((l, _, n), nf)| (l, &nf[..], *n)))
            };
            // Folder i is at location i.
            let listing: Vec<(FolderId, LocationId)> = listing.into_iter().map(|i| (folder(i), loc(i))).collect();
            let assigned = |at: &LocationId, current: Option<u8>| {
                auto_assign(current.map(folder), at, &listing).map(|id| (0..3).find(|i| folder(*i) == id).unwrap())
            };

            let before = total(&rows);
            // The inbound message: to an existing thread, or one new at `new_thread_at`.
            let i = match new_thread_at {
                Some(at) => {
                    rows.push((loc(at), None, 0));
                    rows.len() - 1
                }
                None if rows.is_empty() => {
                    rows.push((loc(0), None, 0));
                    0
                }
                None => target.index(rows.len()),
            };
            let (location, old_folder, unread_before) = rows[i].clone();
            let new_folder = assigned(&location, old_folder);
            let (notified_before, notified_after) = (notified_of(old_folder), notified_of(new_folder));
            rows[i] = (location.clone(), new_folder, next_unread_count(unread_before, ReadChange::Inbound));
            let after = total(&rows);

            let route = count_route(&thread_route(&location, &notified_after));
            let rcpt = Recipient { viewer: viewer.clone(), is_service: false, follow: follow.as_ref() };
            let delta = count_delta(ReadChange::Inbound, unread_before, &notified_before, &notified_after);
            if receives(&rcpt, &route) {
                if let Some(d) = delta {
                    prop_assert_eq!(after as i64 - before as i64, d);
                }
            } else {
                prop_assert_eq!(after, before, "a session without the event keeps its count");
            }
        }
    }
}
