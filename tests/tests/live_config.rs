//! Live configuration end to end: the proxy with its discovery controller follows a TOML
//! file the test rewrites — under continuous keep-alive load, by rename and in place, by
//! the file poll and by `reload_now` (SIGHUP) — with zero failed requests; a removed
//! endpoint gets no request once its removal is in force on every core; split shares follow
//! the weights; an invalid rewrite is refused and changes nothing.
//!
//! Exactness without timing (see `coremesh_tests::live`): each version is declared in force
//! only after every core has answered a report queued behind its `Install`, and every
//! request carries the epoch read before it was written, so where it may go is known
//! exactly whatever the scheduling.

use coremesh_discovery::{Driver, ReloadOutcome, Snapshot};
use coremesh_tests::client::Client;
use coremesh_tests::for_each_driver;
use coremesh_tests::live::{
    check_against_versions, upstream_name, ConfigFile, LiveProxy, TaggedLoad, TaggedUpstreams,
    WriteMode, LIVE_WAIT,
};
use coremesh_tests::proxy::{driver_name, TEST_SHUTDOWN_GRACE_MS};
use coremesh_tests::traffic::wait_until;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

/// Data-plane cores of every proxy here: more than one, so "in force" means on every core.
const CORES: usize = 2;
/// Load clients, each on its own keep-alive connection.
const CLIENTS: usize = 4;
/// Requests that must complete in each epoch before the next rewrite (so a removal is
/// followed by traffic that could have reached the removed endpoint, and did not).
const MIN_REQUESTS_PER_EPOCH: u64 = 40;
/// File poll of the rewrite tests; its settle re-read is min(50 ms, poll).
const FAST_POLL_MS: u64 = 20;
/// File poll of the SIGHUP test: an hour, so only `reload_now` reads the file.
const NO_POLL_MS: u64 = 3_600_000;
/// Upstreams of the rewrite tests: 0..4 may serve "stable", 4..6 "canary".
const STABLE_POOL: std::ops::Range<usize> = 0..4;
const CANARY_POOL: std::ops::Range<usize> = 4..6;
/// Split weights (stable, canary) the rewrites move between.
const WEIGHTS: [(u32, u32); 5] = [(90, 10), (50, 50), (70, 30), (25, 75), (10, 90)];
const POLL: Duration = Duration::from_millis(5);

/// One configuration: the endpoints (upstream indices) of "stable" and "canary", and the
/// weights of the route splitting every request between them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    stable: BTreeSet<usize>,
    canary: BTreeSet<usize>,
    weights: (u32, u32),
}

impl Version {
    fn new(stable: &[usize], canary: &[usize], weights: (u32, u32)) -> Version {
        Version {
            stable: stable.iter().copied().collect(),
            canary: canary.iter().copied().collect(),
            weights,
        }
    }
    /// Every upstream that is an endpoint of some service.
    fn endpoints(&self) -> BTreeSet<usize> {
        self.stable.union(&self.canary).copied().collect()
    }
    fn services(&self) -> [(&'static str, &BTreeSet<usize>, u32); 2] {
        [
            ("stable", &self.stable, self.weights.0),
            ("canary", &self.canary, self.weights.1),
        ]
    }
}

/// What the file is rendered with besides the version.
struct Render {
    driver: Driver,
    poll_ms: u64,
    addrs: Vec<SocketAddr>,
}

impl Render {
    fn new(driver: Driver, poll_ms: u64, upstreams: &TaggedUpstreams) -> Render {
        Render {
            driver,
            poll_ms,
            addrs: (0..upstreams.len()).map(|i| upstreams.addr(i)).collect(),
        }
    }

    fn list(&self, endpoints: &BTreeSet<usize>) -> String {
        endpoints
            .iter()
            .map(|&i| format!("\"{}\"", self.addrs[i]))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The TOML of `v`. `[proxy]` is what `start_with_admin` runs, so no reload flags a
    /// restart.
    fn toml(&self, v: &Version) -> String {
        format!(
            r#"# coremesh live-configuration test
[proxy]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
cores = {CORES}
driver = "{driver}"
pin_cores = false
shutdown_grace_ms = {TEST_SHUTDOWN_GRACE_MS}

[discovery]
debounce_ms = 10

[discovery.file]
poll_interval_ms = {poll}

[[services]]
name = "stable"
endpoints = [{stable}]

[[services]]
name = "canary"
endpoints = [{canary}]

[[routes]]
name = "split"
path_prefix = "/"
split = [{{ service = "stable", weight = {w0} }}, {{ service = "canary", weight = {w1} }}]
"#,
            driver = driver_name(self.driver),
            poll = self.poll_ms,
            stable = self.list(&v.stable),
            canary = self.list(&v.canary),
            w0 = v.weights.0,
            w1 = v.weights.1,
        )
    }

    /// `v` with a line that is not TOML inserted before `[[routes]]`; and that line's number.
    fn with_syntax_error(&self, v: &Version) -> (String, usize) {
        let text = self
            .toml(v)
            .replace("[[routes]]", "this line is not toml\n[[routes]]");
        let line = line_of(&text, "this line is not toml");
        (text, line)
    }

    /// `v` with the split's second service renamed to "ghost"; and the split's line.
    fn with_unknown_service(&self, v: &Version) -> (String, usize) {
        let text = self.toml(v).replace(
            "service = \"canary\", weight",
            "service = \"ghost\", weight",
        );
        let line = line_of(&text, "\"ghost\"");
        (text, line)
    }

    /// What a version must look like once installed: service name to endpoint addresses.
    fn expected(&self, v: &Version) -> BTreeMap<String, BTreeSet<SocketAddr>> {
        v.services()
            .iter()
            .map(|(name, set, _)| {
                (
                    name.to_string(),
                    set.iter().map(|&i| self.addrs[i]).collect(),
                )
            })
            .collect()
    }
}

/// 1-based number of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} is not in the rendered file"))
}

/// How a rewrite reaches the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The file poll notices it.
    Poll,
    /// `reload_now` right after the write (SIGHUP in `coremesh run`).
    Sighup,
}

/// A proxy following a file, tagged load through it, and the versions in force so far
/// (index = epoch).
struct Scenario {
    render: Render,
    file: ConfigFile,
    live: LiveProxy,
    upstreams: TaggedUpstreams,
    load: Option<TaggedLoad>,
    /// The version in force in each epoch (a refused rewrite repeats the previous one).
    in_force: Vec<Version>,
    applied: u64,
    refused: u64,
    what: String,
}

impl Scenario {
    /// Start the upstreams, the file with `first`, the proxy and the controller; with
    /// `epochs > 0`, also tagged load for that many epochs (epoch 0 = `first`).
    fn start(
        driver: Driver,
        mode: WriteMode,
        poll_ms: u64,
        upstreams: usize,
        first: Version,
        epochs: usize,
    ) -> Scenario {
        let upstreams = TaggedUpstreams::start(upstreams);
        let render = Render::new(driver, poll_ms, &upstreams);
        let file = ConfigFile::create(driver_name(driver), mode, &render.toml(&first));
        let live = LiveProxy::start(driver, &file);
        let what = format!("driver {}, {mode:?} writes", driver_name(driver));
        let load =
            (epochs > 0).then(|| TaggedLoad::start(live.addr(), CLIENTS, epochs, upstreams.len()));
        let scenario = Scenario {
            render,
            file,
            live,
            upstreams,
            load,
            in_force: vec![first],
            applied: 0,
            refused: 0,
            what,
        };
        if scenario.load.is_some() {
            scenario.wait_for_traffic(0, &BTreeSet::new());
        }
        scenario
    }

    fn epoch(&self) -> u32 {
        (self.in_force.len() - 1) as u32
    }

    fn current(&self) -> &Version {
        self.in_force.last().expect("at least the first version")
    }

    /// Counters must be exactly what the rewrites so far imply.
    fn assert_counters(&self, step: &str) {
        let stats = self.live.stats();
        assert_eq!(
            (
                stats.reloads_applied,
                stats.snapshots_published,
                stats.reloads_refused,
                stats.restart_required
            ),
            (self.applied, self.applied, self.refused, false),
            "{}, {step}: (reloads_applied, snapshots_published, reloads_refused, \
             restart_required) in {stats:?}",
            self.what
        );
        assert_eq!(
            self.live.installed_count() as u64,
            self.applied,
            "{}, {step}: snapshots installed",
            self.what
        );
    }

    /// Rewrite the file with the valid `next`, wait until it is in force on every core,
    /// start its epoch, and wait for traffic under it.
    fn apply(&mut self, next: Version, trigger: Trigger) {
        let step = format!("epoch {} ({next:?})", self.epoch() + 1);
        self.file.write(&self.render.toml(&next));
        if trigger == Trigger::Sighup {
            let outcome = self.live.reload_now();
            assert_eq!(
                outcome,
                ReloadOutcome::Applied,
                "{}, {step}: reload_now",
                self.what
            );
        }
        self.applied += 1;
        let snapshot = self
            .live
            .wait_installed(self.applied as usize)
            .unwrap_or_else(|| {
                panic!(
                    "{}, {step}: snapshot {} never came: {:?}",
                    self.what,
                    self.applied,
                    self.live.stats()
                )
            });
        self.assert_snapshot_is(&snapshot, &next, &step);
        self.assert_counters(&step);
        if let Err(last) = self
            .live
            .wait_in_force_on_every_core(&self.render.expected(&next))
        {
            panic!(
                "{}, {step}: never in force on every core; last scrape: {last}",
                self.what
            );
        }
        let before = self.current().endpoints();
        self.in_force.push(next);
        self.start_epoch(&before);
    }

    /// Rewrite the file with `text`, which is invalid at `line`; the refusal must name
    /// the file, that line and every one of `fragments`. Nothing else changes.
    fn refuse(&mut self, text: &str, line: usize, fragments: &[&str], trigger: Trigger) {
        let step = format!("epoch {} (refused rewrite)", self.epoch() + 1);
        let at = format!("{}:{line}:", self.file.origin());
        let installed = self.live.installed_count();
        let snapshot_before = self.live.discovery().current();
        self.file.write(text);
        match trigger {
            Trigger::Sighup => match self.live.reload_now() {
                ReloadOutcome::Refused(errors) => {
                    assert!(
                        errors.iter().any(|e| e.line == line),
                        "{}, {step}: no error on line {line}: {errors}",
                        self.what
                    );
                    let text = errors.to_string();
                    for f in std::iter::once(at.as_str()).chain(fragments.iter().copied()) {
                        assert!(
                            text.contains(f),
                            "{}, {step}: the errors do not name {f:?}: {text}",
                            self.what
                        );
                    }
                }
                other => panic!(
                    "{}, {step}: reload_now answered {other:?}, not Refused",
                    self.what
                ),
            },
            Trigger::Poll => {
                let want = self.refused + 1;
                assert!(
                    wait_until(LIVE_WAIT, POLL, || self.live.stats().reloads_refused
                        >= want),
                    "{}, {step}: the refusal was never counted: {:?}",
                    self.what,
                    self.live.stats()
                );
            }
        }
        self.refused += 1;
        self.assert_counters(&step);
        let last_error = self.live.stats().last_error.unwrap_or_default();
        for f in std::iter::once(at.as_str()).chain(fragments.iter().copied()) {
            assert!(
                last_error.contains(f),
                "{}, {step}: last_error does not name {f:?}: {last_error}",
                self.what
            );
        }
        assert_eq!(
            self.live.installed_count(),
            installed,
            "{}, {step}: a refused rewrite installed a snapshot",
            self.what
        );
        assert!(
            std::sync::Arc::ptr_eq(&snapshot_before, &self.live.discovery().current()),
            "{}, {step}: the controller's current snapshot changed",
            self.what
        );
        let same = self.current().clone();
        let before = same.endpoints();
        self.in_force.push(same);
        self.start_epoch(&before);
    }

    /// `reload_now` with a file whose configuration is the one in force: Unchanged, and
    /// nothing moves.
    fn reload_unchanged(&mut self, text: Option<&str>) {
        let step = format!("epoch {} (unchanged reload)", self.epoch() + 1);
        if let Some(text) = text {
            self.file.write(text);
        }
        assert_eq!(
            self.live.reload_now(),
            ReloadOutcome::Unchanged,
            "{}, {step}: reload_now",
            self.what
        );
        self.assert_counters(&step);
        let same = self.current().clone();
        let before = same.endpoints();
        self.in_force.push(same);
        self.start_epoch(&before);
    }

    /// Start the epoch of the version just put in force (the last of `in_force`); with
    /// load, wait for its traffic, which must reach the endpoints not in `before`.
    fn start_epoch(&mut self, before: &BTreeSet<usize>) {
        let epoch = self.epoch();
        if let Some(load) = &self.load {
            load.set_epoch(epoch);
            let added: BTreeSet<usize> = self
                .current()
                .endpoints()
                .difference(before)
                .copied()
                .collect();
            self.wait_for_traffic(epoch, &added);
        }
    }

    /// Bounded wait until epoch `epoch` has seen [`MIN_REQUESTS_PER_EPOCH`] requests, every
    /// service with a weight some of them, and every endpoint in `added` at least one.
    fn wait_for_traffic(&self, epoch: u32, added: &BTreeSet<usize>) {
        let load = self.load.as_ref().expect("a scenario with load");
        let version = self.current();
        let reached =
            |set: &BTreeSet<usize>| set.iter().any(|&i| self.upstreams.reached_in(i, epoch));
        let done = wait_until(LIVE_WAIT, POLL, || {
            !load.failures().is_empty()
                || (load.completed_in(epoch) >= MIN_REQUESTS_PER_EPOCH
                    && version
                        .services()
                        .iter()
                        .all(|(_, set, weight)| *weight == 0 || reached(set))
                    && added.iter().all(|&i| self.upstreams.reached_in(i, epoch)))
        });
        let failures = load.failures();
        assert!(
            failures.is_empty(),
            "{}, epoch {epoch}: {} failed requests, first: {:?}",
            self.what,
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(
            done,
            "{}, epoch {epoch} ({version:?}): traffic never reached every service and every \
             added endpoint {added:?}: {} requests completed in it; upstreams reached: {:?}",
            self.what,
            load.completed_in(epoch),
            (0..self.upstreams.len())
                .filter(|&i| self.upstreams.reached_in(i, epoch))
                .collect::<Vec<_>>()
        );
    }

    fn assert_snapshot_is(&self, snapshot: &Snapshot, v: &Version, step: &str) {
        let endpoints: BTreeMap<String, BTreeSet<SocketAddr>> = snapshot
            .services
            .iter()
            .map(|s| (s.name.clone(), s.endpoints.iter().copied().collect()))
            .collect();
        assert_eq!(
            endpoints,
            self.render.expected(v),
            "{}, {step}: installed endpoints",
            self.what
        );
        let weights: Vec<(String, u32)> = snapshot
            .routes
            .iter()
            .flat_map(|r| r.targets.iter())
            .map(|&(i, w)| (snapshot.services[i].name.clone(), w))
            .collect();
        assert_eq!(
            weights,
            vec![
                ("stable".to_string(), v.weights.0),
                ("canary".to_string(), v.weights.1)
            ],
            "{}, {step}: installed split",
            self.what
        );
    }

    /// Stop the load and check every request: none failed, each went only where the
    /// versions allowed (a removed endpoint got nothing once its removal was in force),
    /// each reached the upstreams exactly once.
    fn finish(mut self) -> usize {
        let load = self.load.take().expect("a scenario with load");
        let report = load.stop();
        assert!(
            report.failures.is_empty(),
            "{}: {} failed requests, first: {:?}",
            self.what,
            report.failures.len(),
            &report.failures[..report.failures.len().min(5)]
        );
        let in_force: Vec<BTreeSet<usize>> = self.in_force.iter().map(Version::endpoints).collect();
        let violations = check_against_versions(&in_force, &report, &self.upstreams);
        assert!(
            violations.is_empty(),
            "{}: requests went where no version in force allowed:\n{}",
            self.what,
            violations.join("\n")
        );
        let errors = self.upstreams.errors();
        assert!(
            errors.is_empty(),
            "{}: upstream errors: {errors:?}",
            self.what
        );
        self.assert_counters("at the end");
        eprintln!(
            "{}: {} epochs, {} requests, all answered by an endpoint in force",
            self.what,
            self.in_force.len(),
            report.total()
        );
        report.total()
    }
}

/// A tiny deterministic generator (xorshift64), so the 50 rewrites are the same every run.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Add `pool[i]` to `set` if absent, else remove it — unless it is the last one.
fn toggle(set: &mut BTreeSet<usize>, pool: std::ops::Range<usize>, rng: &mut Xorshift) {
    loop {
        let i = pool.start + rng.below(pool.len());
        if !set.contains(&i) {
            set.insert(i);
            return;
        }
        if set.len() > 1 {
            set.remove(&i);
            return;
        }
    }
}

/// The first version and 50 rewrites: each toggles a stable endpoint; every second one
/// also toggles a canary endpoint; every third one also shifts the split. No service is
/// ever left without endpoints, and every rewrite changes the snapshot.
fn fifty_rewrites() -> (Version, Vec<Version>) {
    let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
    let first = Version::new(&[0, 1], &[4], WEIGHTS[0]);
    let mut v = first.clone();
    let mut rewrites = Vec::new();
    for step in 1..=50 {
        toggle(&mut v.stable, STABLE_POOL, &mut rng);
        if step % 2 == 0 {
            toggle(&mut v.canary, CANARY_POOL, &mut rng);
        }
        if step % 3 == 0 {
            let at = WEIGHTS.iter().position(|w| *w == v.weights).unwrap_or(0);
            v.weights = WEIGHTS[(at + 1 + rng.below(WEIGHTS.len() - 1)) % WEIGHTS.len()];
        }
        rewrites.push(v.clone());
    }
    (first, rewrites)
}

fn fifty_rewrites_under_load(driver: Driver, mode: WriteMode) {
    let (first, rewrites) = fifty_rewrites();
    let (mut added, mut removed) = (0, 0);
    let mut previous = first.endpoints();
    for v in &rewrites {
        added += v.endpoints().difference(&previous).count();
        removed += previous.difference(&v.endpoints()).count();
        previous = v.endpoints();
    }
    assert!(
        added >= 20 && removed >= 20,
        "the plan must add and remove endpoints often: {added} added, {removed} removed"
    );
    let mut scenario = Scenario::start(
        driver,
        mode,
        FAST_POLL_MS,
        CANARY_POOL.end,
        first,
        rewrites.len() + 1,
    );
    for v in rewrites {
        scenario.apply(v, Trigger::Poll);
    }
    assert_eq!(scenario.applied, 50);
    let total = scenario.finish();
    assert!(total as u64 >= 51 * MIN_REQUESTS_PER_EPOCH);
}

/// Test 1 (by rename): 50 rewrites under load — endpoints added and removed among six
/// upstreams, the split's weights shifted — zero failed requests, every request at an
/// endpoint of a version in force while it ran, none at a removed endpoint after its
/// removal was in force on every core, none lost or duplicated.
#[test]
fn fifty_rewrites_by_rename_under_load_lose_nothing_and_removed_endpoints_get_nothing() {
    for_each_driver(|driver| fifty_rewrites_under_load(driver, WriteMode::Rename));
}

/// Test 1 (in place): the same 50 rewrites, each overwriting the file's bytes in place
/// (padded to one size, so no truncation ever shows an empty or cut file; the controller
/// acts only on two equal reads).
#[test]
fn fifty_in_place_rewrites_under_load_lose_nothing_and_removed_endpoints_get_nothing() {
    for_each_driver(|driver| fifty_rewrites_under_load(driver, WriteMode::InPlace));
}

/// Requests per share measurement.
const SHARE_REQUESTS: u64 = 2000;
/// Allowed distance of the canary count from its expectation. The split draws each
/// request's service independently (the core's RNG), so the count is Binomial(n, p), and by
/// Hoeffding P(|X − np| ≥ t) ≤ 2·exp(−2t²/n). With n = 2000, t = 130: 2t²/n = 16.9,
/// exp(−16.9) = 4.6e-8, so ≤ 9.2e-8 per measurement; four measurements per run (two per
/// driver) fail together with probability ≤ 3.7e-7 < 1e-6.
const SHARE_TOLERANCE: u64 = 130;

/// `SHARE_REQUESTS` GETs over four keep-alive connections; how many "canary" answered.
fn canary_count(proxy: SocketAddr, stable: &[usize], canary: &[usize], what: &str) -> u64 {
    let mut clients: Vec<Client> = (0..4)
        .map(|_| Client::connect(proxy).expect("connect to the proxy"))
        .collect();
    let mut canary_count = 0;
    for n in 0..SHARE_REQUESTS {
        let client = &mut clients[n as usize % 4];
        let path = format!("/share/{n}");
        client
            .send_request("GET", &path, &[], None)
            .unwrap_or_else(|e| panic!("{what}: writing {path}: {e}"));
        let r = client
            .read_response(false)
            .unwrap_or_else(|e| panic!("{what}: {path} got no full response: {e}"));
        assert_eq!(r.status, 200, "{what}: {path}: {}", r.body_text());
        let by = r.header("x-upstream").unwrap_or_default();
        if canary.iter().any(|&i| upstream_name(i) == by) {
            canary_count += 1;
        } else {
            assert!(
                stable.iter().any(|&i| upstream_name(i) == by),
                "{what}: {path} answered by {by:?}, neither stable nor canary"
            );
        }
    }
    canary_count
}

fn assert_share(count: u64, canary_weight: u32, what: &str) {
    let expected = SHARE_REQUESTS * u64::from(canary_weight) / 100;
    assert!(
        count.abs_diff(expected) <= SHARE_TOLERANCE,
        "{what}: canary answered {count} of {SHARE_REQUESTS}, expected {expected} ± \
         {SHARE_TOLERANCE} for weight {canary_weight}/100"
    );
}

/// Test 2: a 90/10 split shifted to 50/50 by one edit of the file: once the edit is in
/// force on every core, 2000 requests split within a binomially justified tolerance of
/// 50/50 (and before it, of 90/10).
#[test]
fn shifting_a_split_from_90_10_to_50_50_by_one_edit_moves_the_shares() {
    for_each_driver(|driver| {
        let (stable, canary) = ([0, 1], [2, 3]);
        let first = Version::new(&stable, &canary, (90, 10));
        let mut scenario = Scenario::start(driver, WriteMode::Rename, FAST_POLL_MS, 4, first, 0);
        let what = scenario.what.clone();
        let before = canary_count(scenario.live.addr(), &stable, &canary, &what);
        assert_share(before, 10, &format!("{what}, at 90/10"));
        scenario.apply(Version::new(&stable, &canary, (50, 50)), Trigger::Poll);
        let after = canary_count(scenario.live.addr(), &stable, &canary, &what);
        assert_share(after, 50, &format!("{what}, after the edit to 50/50"));
        scenario.assert_counters("after the shares");
        eprintln!("{what}: canary {before}/2000 at 90/10, {after}/2000 at 50/50");
    });
}

/// Test 3: invalid rewrites under load — a syntax error, then a split naming an unknown
/// service, each also adding an endpoint — are refused: the refusal is counted (once per
/// version), `last_error` names the file, line and field, no snapshot is installed, and
/// every request keeps succeeding at the endpoints in force (the endpoint the invalid
/// versions add gets nothing). The fixed file is then applied as usual.
#[test]
fn invalid_rewrites_are_refused_naming_the_line_and_leave_traffic_untouched() {
    for_each_driver(|driver| {
        let first = Version::new(&[0, 1], &[2], (80, 20));
        let wanted = Version::new(&[0, 1, 3], &[2], (20, 80));
        let mut scenario = Scenario::start(driver, WriteMode::Rename, FAST_POLL_MS, 4, first, 4);
        let (text, line) = scenario.render.with_syntax_error(&wanted);
        scenario.refuse(&text, line, &[], Trigger::Poll);
        let (text, line) = scenario.render.with_unknown_service(&wanted);
        scenario.refuse(
            &text,
            line,
            &["routes[0].split[1].service", "unknown service \"ghost\""],
            Trigger::Poll,
        );
        // Both refused versions stayed refused (counted once each) while traffic ran.
        scenario.assert_counters("after both refusals");
        scenario.apply(wanted, Trigger::Poll);
        scenario.finish();
    });
}

/// Test 4: the SIGHUP path — `reload_now` right after each rewrite (the poll is an hour
/// away, so only it reads the file) answers Applied for a valid change, Unchanged for no
/// change (the same file, a comment-only edit, a file restored to the configuration in
/// force after a refusal) and Refused, naming the line, for an invalid one; under load,
/// with zero failed requests and every request at an endpoint in force.
#[test]
fn sighup_reload_answers_applied_unchanged_or_refused_under_load() {
    for_each_driver(|driver| {
        let first = Version::new(&[0, 1], &[2], (80, 20));
        let grown = Version::new(&[0, 1, 3], &[2], (80, 20));
        let shrunk = Version::new(&[1, 3], &[2], (50, 50));
        let mut scenario = Scenario::start(driver, WriteMode::Rename, NO_POLL_MS, 4, first, 9);
        // 1: an endpoint added.
        scenario.apply(grown.clone(), Trigger::Sighup);
        // 2: nothing written since.
        scenario.reload_unchanged(None);
        // 3: only a comment differs.
        let commented = format!("{}# only a comment changed\n", scenario.render.toml(&grown));
        scenario.reload_unchanged(Some(&commented));
        // 4: a syntax error.
        let (text, line) = scenario.render.with_syntax_error(&shrunk);
        scenario.refuse(&text, line, &[], Trigger::Sighup);
        // 5: the configuration in force written back: nothing to apply.
        let restored = scenario.render.toml(&grown);
        scenario.reload_unchanged(Some(&restored));
        // 6: an endpoint removed and the split shifted.
        scenario.apply(shrunk.clone(), Trigger::Sighup);
        // 7: a split naming an unknown service.
        let (text, line) = scenario.render.with_unknown_service(&grown);
        scenario.refuse(
            &text,
            line,
            &["routes[0].split[1].service", "unknown service \"ghost\""],
            Trigger::Sighup,
        );
        // 8: back to the first version.
        scenario.apply(Version::new(&[0, 1], &[2], (80, 20)), Trigger::Sighup);
        assert_eq!((scenario.applied, scenario.refused), (3, 2));
        scenario.finish();
    });
}

/// The check itself: a request tagged with an epoch whose version does not have the
/// upstream that received it is reported, from the client's side and the upstream's; one
/// the upstream never received, or received twice, is reported too.
#[test]
fn the_version_check_reports_a_request_at_an_endpoint_not_in_force() {
    use coremesh_tests::live::{Completed, TaggedReport};
    let upstreams = TaggedUpstreams::start(2);
    // Version 0: up0 only; version 1: up1 only.
    let in_force = vec![BTreeSet::from([0]), BTreeSet::from([1])];
    let direct = |upstream: usize, path: &str| {
        let r = coremesh_tests::client::get(upstreams.addr(upstream), path, &[])
            .unwrap_or_else(|e| panic!("GET {path} straight to up{upstream}: {e}"));
        assert_eq!(r.status, 200);
    };
    // Client 0, request 0: written in epoch 1, answered in epoch 1, by up0 — which left at
    // version 1 (a removed endpoint reached after its removal was in force).
    direct(0, "/live/0/0/1");
    // Client 0, request 1: written in epoch 0, answered in epoch 0 by up1 — allowed, since
    // version 1 (with up1) may have been installed meanwhile.
    direct(1, "/live/0/1/0");
    // Client 0, request 2: received twice.
    direct(1, "/live/0/2/1");
    direct(1, "/live/0/2/1");
    let completed = |sequence, epoch_before, epoch_after, upstream| Completed {
        sequence,
        epoch_before,
        epoch_after,
        upstream,
    };
    let report = TaggedReport {
        completed: vec![vec![
            completed(0, 1, 1, 0),
            completed(1, 0, 0, 1),
            completed(2, 1, 1, 1),
            // Request 3 never reached an upstream.
            completed(3, 1, 1, 1),
        ]],
        failures: Vec::new(),
    };
    let violations = check_against_versions(&in_force, &report, &upstreams);
    let has = |needle: &str| violations.iter().any(|v| v.contains(needle));
    assert!(
        has("client 0 request 0 (written in epoch 1, answered by epoch 1) was answered by up0"),
        "{violations:#?}"
    );
    assert!(
        has("request 2 (epochs 1..1, answered by up1) was received 2 times"),
        "{violations:#?}"
    );
    assert!(
        has("request 3 (epochs 1..1, answered by up1) was received 0 times"),
        "{violations:#?}"
    );
    assert_eq!(violations.len(), 3, "{violations:#?}");
}
