//! The Kubernetes source through the parts of the API's list/watch semantics that a quiet
//! test cluster rarely shows: watches ending at `timeoutSeconds`, bookmarks, slices leaving
//! and entering the label selector, paged lists and an expired `continue` token. Each test
//! checks the exact endpoint sets reported and what the API server stand-in received and
//! sent (so a lost or repeated event, or a needless relist, shows).

use crate::kubernetes::{addrs, service, slice, slice_of, start_watch_with, Condition};
use crate::support::api_server_stand_in::{Action, ApiServerStandIn, Kind, Received, Trigger};
use crate::support::wait_until;
use coremesh_discovery::KubernetesSettings;

use Condition::Ready;

/// `(event type, slice name)` of every slice event the stand-in wrote.
fn slice_events(stand_in: &ApiServerStandIn) -> Vec<(&'static str, String)> {
    stand_in
        .delivered(Kind::EndpointSlice)
        .into_iter()
        .map(|event| (event.event_type, event.name))
        .collect()
}

fn watches_of(stand_in: &ApiServerStandIn, kind: Kind) -> Vec<Received> {
    stand_in
        .received(kind)
        .into_iter()
        .filter(|received| received.watch)
        .collect()
}

fn lists_of(stand_in: &ApiServerStandIn, kind: Kind) -> Vec<Received> {
    stand_in
        .received(kind)
        .into_iter()
        .filter(|received| !received.watch)
        .collect()
}

fn version_param(received: &Received) -> u64 {
    received
        .param("resourceVersion")
        .and_then(|version| version.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {received:?}"))
}

fn delete(name: &str) -> Action {
    Action::DeleteSlice {
        namespace: "prod".into(),
        name: name.into(),
    }
}

#[test]
fn a_watch_ended_at_its_timeout_resumes_without_losing_or_repeating_an_event() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&service("prod", "web"));
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.1", Ready)]));
    let settings = KubernetesSettings {
        watch_timeout_secs: 1,
        ..KubernetesSettings::default()
    };
    let (runtime, mut reports) = start_watch_with(&stand_in, "web.prod:80", settings);
    reports.until(&addrs(&["10.1.0.1:8080"]));
    let listed_at = stand_in.version();

    // Made as a watch ends at its timeout: only the watch resumed after it can tell.
    let at_timeout = Trigger::WatchTimeout(Kind::EndpointSlice);
    stand_in.at_next(
        at_timeout,
        vec![Action::ApplySlice(Box::new(slice(
            "web-b",
            &[("10.1.1.1", Ready)],
        )))],
    );
    reports.until(&addrs(&["10.1.0.1:8080", "10.1.1.1:8080"]));
    // A change while some watch (or none, between two) is open.
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.2", Ready)]));
    reports.until(&addrs(&["10.1.0.2:8080", "10.1.1.1:8080"]));
    stand_in.at_next(at_timeout, vec![delete("web-b")]);
    reports.until(&addrs(&["10.1.0.2:8080"]));
    let timeouts = stand_in.watch_timeouts(Kind::EndpointSlice);
    wait_until("one more watch ends at its timeout and is resumed", || {
        stand_in.watch_timeouts(Kind::EndpointSlice) > timeouts
            && watches_of(&stand_in, Kind::EndpointSlice).len() > timeouts + 1
    });

    // Each change reached the client exactly once, across every watch.
    assert_eq!(
        slice_events(&stand_in),
        [
            ("ADDED", "web-b".to_owned()),
            ("MODIFIED", "web-a".to_owned()),
            ("DELETED", "web-b".to_owned()),
        ]
    );
    // Never listed again; every watch asked for the timeout and bookmarks, and each
    // resumed from a version no older than the one before.
    assert_eq!(stand_in.lists(Kind::EndpointSlice), 1);
    assert_eq!(stand_in.lists(Kind::Service), 1);
    let watches = watches_of(&stand_in, Kind::EndpointSlice);
    assert!(watches.len() >= 4, "{watches:?}");
    assert_eq!(version_param(&watches[0]), listed_at);
    for pair in watches.windows(2) {
        assert!(
            version_param(&pair[0]) <= version_param(&pair[1]),
            "{pair:?}"
        );
    }
    for watch in &watches {
        assert_eq!(watch.param("timeoutSeconds"), Some("1"), "{watch:?}");
        assert_eq!(
            watch.param("allowWatchBookmarks"),
            Some("true"),
            "{watch:?}"
        );
        assert_eq!(
            watch.param("labelSelector"),
            Some("kubernetes.io/service-name=web")
        );
        assert_eq!(watch.status, 200);
    }
    // Bookmarks were sent before each timeout, and a watch's end is not a failure.
    assert!(stand_in.bookmarks(Kind::EndpointSlice) >= 3);
    assert_eq!(reports.failures, Vec::<String>::new());
    runtime.shutdown_background();
}

#[test]
fn a_bookmark_carries_the_watch_past_history_it_no_longer_needs() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&service("prod", "web"));
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.1", Ready)]));
    let (runtime, mut reports) =
        start_watch_with(&stand_in, "web.prod:80", KubernetesSettings::default());
    reports.until(&addrs(&["10.1.0.1:8080"]));
    let listed_at = stand_in.version();

    // Another Service's slices change: the version moves on, nothing reaches this watch
    // but the bookmark that says so.
    for round in 1..=3 {
        let address = format!("10.9.0.{round}");
        stand_in.apply_slice(&slice_of("db", "db-a", &[(address.as_str(), Ready)]));
    }
    let bookmarked_at = stand_in.version();
    assert_eq!(bookmarked_at, listed_at + 3);
    // Both watches must hear one (sent again until each has, all at the same version).
    wait_until("a bookmark reaches both watches", || {
        stand_in.send_bookmarks();
        stand_in.bookmarks(Kind::EndpointSlice) >= 1 && stand_in.bookmarks(Kind::Service) >= 1
    });
    // History before now is gone (a watch from the listed version would get 410 Gone), and
    // the connection breaks after the bookmark.
    stand_in.compact();
    stand_in.drop_watches();
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.2", Ready)]));
    reports.until(&addrs(&["10.1.0.2:8080"]));

    // Resumed from the bookmark's version: no 410, no relist.
    assert_eq!(stand_in.lists(Kind::EndpointSlice), 1);
    let watches = watches_of(&stand_in, Kind::EndpointSlice);
    let versions: Vec<u64> = watches.iter().map(version_param).collect();
    assert_eq!(versions, [listed_at, bookmarked_at]);
    assert_eq!(watches[0].param("allowWatchBookmarks"), Some("true"));
    assert_eq!(slice_events(&stand_in), [("MODIFIED", "web-a".to_owned())]);
    assert!(
        !reports.failures.iter().any(|f| f.contains("410")),
        "{:?}",
        reports.failures
    );
    runtime.shutdown_background();
}

#[test]
fn a_slice_relabelled_away_from_the_service_takes_its_endpoints_with_it() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&service("prod", "web"));
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.1", Ready)]));
    stand_in.apply_slice(&slice("web-b", &[("10.1.1.1", Ready)]));
    let (runtime, mut reports) =
        start_watch_with(&stand_in, "web.prod:80", KubernetesSettings::default());
    reports.until(&addrs(&["10.1.0.1:8080", "10.1.1.1:8080"]));

    // Relabelled to another Service: a deletion for this one's watch.
    stand_in.apply_slice(&slice_of("db", "web-b", &[("10.1.1.1", Ready)]));
    reports.until(&addrs(&["10.1.0.1:8080"]));
    // Changed while labelled elsewhere: nothing for this watch.
    stand_in.apply_slice(&slice_of("db", "web-b", &[("10.1.1.2", Ready)]));
    // Back: an addition, with what it holds now.
    stand_in.apply_slice(&slice("web-b", &[("10.1.1.2", Ready)]));
    reports.until(&addrs(&["10.1.0.1:8080", "10.1.1.2:8080"]));
    // Relabelled while the watch is away: the resumed watch replays it as a deletion.
    stand_in.drop_watches();
    stand_in.apply_slice(&slice_of("db", "web-a", &[("10.1.0.1", Ready)]));
    reports.until(&addrs(&["10.1.1.2:8080"]));

    assert_eq!(
        slice_events(&stand_in),
        [
            ("DELETED", "web-b".to_owned()),
            ("ADDED", "web-b".to_owned()),
            ("DELETED", "web-a".to_owned()),
        ]
    );
    assert_eq!(stand_in.lists(Kind::EndpointSlice), 1);
    runtime.shutdown_background();
}

/// Five slices of `web` (`web-a` .. `web-e`, one endpoint each) and one of `db`.
fn five_slices(stand_in: &ApiServerStandIn) {
    stand_in.apply_service(&service("prod", "web"));
    stand_in.apply_slice(&slice_of("db", "db-a", &[("10.9.0.1", Ready)]));
    for (index, name) in ["web-a", "web-b", "web-c", "web-d", "web-e"]
        .iter()
        .enumerate()
    {
        let address = format!("10.1.{index}.1");
        stand_in.apply_slice(&slice(name, &[(address.as_str(), Ready)]));
    }
}

fn paged(limit: u32) -> KubernetesSettings {
    KubernetesSettings {
        list_page_size: limit,
        ..KubernetesSettings::default()
    }
}

/// `(status, limit, has continue, has resourceVersion)` of each list request.
fn list_shapes(lists: &[Received]) -> Vec<(u16, Option<&str>, bool, bool)> {
    lists
        .iter()
        .map(|list| {
            (
                list.status,
                list.param("limit"),
                list.param("continue").is_some(),
                list.param("resourceVersion").is_some(),
            )
        })
        .collect()
}

#[test]
fn a_list_in_small_pages_yields_every_endpoint_and_a_consistent_version() {
    let stand_in = ApiServerStandIn::start();
    five_slices(&stand_in);
    let listed_at = stand_in.version();
    // A slice created while the list is between pages: not in the list (its pages are a
    // snapshot as of the first), so the watch from that version must bring it.
    stand_in.at_next(
        Trigger::ContinuedList(Kind::EndpointSlice),
        vec![Action::ApplySlice(Box::new(slice(
            "web-f",
            &[("10.1.5.1", Ready)],
        )))],
    );
    let (runtime, mut reports) = start_watch_with(&stand_in, "web.prod:80", paged(2));
    let all = addrs(&[
        "10.1.0.1:8080",
        "10.1.1.1:8080",
        "10.1.2.1:8080",
        "10.1.3.1:8080",
        "10.1.4.1:8080",
        "10.1.5.1:8080",
    ]);
    let before = reports.until(&all);
    // Nothing partial was ever reported: the five listed, then the sixth.
    assert!(
        before.is_empty() || before == [all[..5].to_vec()],
        "{before:?}"
    );

    let lists = lists_of(&stand_in, Kind::EndpointSlice);
    assert_eq!(
        list_shapes(&lists),
        [
            (200, Some("2"), false, false),
            (200, Some("2"), true, false),
            (200, Some("2"), true, false),
        ]
    );
    let watches = watches_of(&stand_in, Kind::EndpointSlice);
    assert_eq!(version_param(&watches[0]), listed_at);
    assert_eq!(slice_events(&stand_in), [("ADDED", "web-f".to_owned())]);
    assert_eq!(reports.failures, Vec::<String>::new());
    runtime.shutdown_background();
}

#[test]
fn an_expired_continue_token_leads_to_a_relist_with_the_right_endpoints() {
    let stand_in = ApiServerStandIn::start();
    five_slices(&stand_in);
    // Between the first and second page: `web-a` (on the first page) is deleted, `web-f`
    // created, and history compacted past the list's version, so its token expires.
    stand_in.at_next(
        Trigger::ContinuedList(Kind::EndpointSlice),
        vec![
            delete("web-a"),
            Action::ApplySlice(Box::new(slice("web-f", &[("10.1.5.1", Ready)]))),
            Action::Compact,
        ],
    );
    let (runtime, mut reports) = start_watch_with(&stand_in, "web.prod:80", paged(2));
    let expected = addrs(&[
        "10.1.1.1:8080",
        "10.1.2.1:8080",
        "10.1.3.1:8080",
        "10.1.4.1:8080",
        "10.1.5.1:8080",
    ]);
    let before = reports.until(&expected);
    // The first page alone, or with the deleted `web-a`, was never reported.
    assert_eq!(before, Vec::<Vec<_>>::new());

    let lists = lists_of(&stand_in, Kind::EndpointSlice);
    assert_eq!(
        list_shapes(&lists),
        [
            (200, Some("2"), false, false),
            (410, Some("2"), true, false),
            (200, Some("2"), false, false),
            (200, Some("2"), true, false),
            (200, Some("2"), true, false),
        ]
    );
    assert!(
        reports
            .failures
            .iter()
            .any(|f| f.contains("Expired") || f.contains("410")),
        "{:?}",
        reports.failures
    );
    // The relist's version is where the watch starts: nothing is replayed.
    wait_until("the slices are watched after the relist", || {
        !watches_of(&stand_in, Kind::EndpointSlice).is_empty()
    });
    let watches = watches_of(&stand_in, Kind::EndpointSlice);
    assert_eq!(version_param(&watches[0]), stand_in.version());
    assert_eq!(slice_events(&stand_in), Vec::<(&str, String)>::new());
    runtime.shutdown_background();
}
