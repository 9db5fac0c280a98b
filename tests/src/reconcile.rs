//! Reconciling what load clients saw (`gated_load`) with what the upstreams recorded
//! (`ledger`), id by id: every request got exactly one whole response (or one its upstream
//! cut short, or, pipelined behind a response that ended the connection, none while no
//! upstream processed it), a failure is a proper HTTP error, no POST reached an upstream twice, a 2xx
//! was answered 2xx by exactly one upstream once (the one the client names), a duplicate is
//! a GET retried after an attempt that failed at the upstream, no upstream success became
//! an error, bodies arrived intact, and interim responses were not repeated. Every breach is
//! a violation naming the id and its trail through the upstreams; the rest is counted.

use crate::gated_load::{ClientReport, Outcome, Planned};
use crate::ledger::{receipt, upstream_name, Arrival, Fate, Treatment};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// The reconciliation of what clients saw with what upstreams recorded.
#[derive(Debug, Default)]
pub struct Reconciliation {
    pub violations: Vec<String>,
    /// Requests answered 2xx.
    pub successes: u64,
    /// Client-visible statuses, with who produced them (`L{i}` or `proxy:<kind>`).
    pub statuses: BTreeMap<String, u64>,
    /// Fates of every arrival.
    pub fates: BTreeMap<&'static str, u64>,
    /// GETs answered 2xx that reached upstreams more than once, every other attempt having
    /// failed at the upstream; by the fate of the (first) failed attempt.
    pub retried_duplicates: u64,
    pub duplicates_by_failed_fate: BTreeMap<&'static str, u64>,
    /// GETs that reached upstreams several times and still failed.
    pub retried_and_failed: u64,
    /// POSTs answered with an error, by who produced it.
    pub post_errors: BTreeMap<String, u64>,
    /// Requests the proxy failed without any upstream reading them.
    pub failed_unseen: u64,
    /// Responses by the number of interim responses before them.
    pub interim: BTreeMap<usize, u64>,
    /// Responses cut short because the upstream cut them short.
    pub cut: u64,
    /// Pipelined requests left unanswered when the connection ended before them, which no
    /// upstream processed.
    pub unanswered: u64,
}

impl Reconciliation {
    fn violation(&mut self, id: u64, what: String) {
        self.violations.push(format!("id {id}: {what}"));
    }

    /// The counts, one line per kind, for a test's report.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "  client statuses: {:?}", self.statuses);
        let _ = writeln!(s, "  upstream arrival fates: {:?}", self.fates);
        let _ = writeln!(
            s,
            "  GETs answered 2xx after reaching upstreams more than once: {} (failed attempt: \
             {:?}); retried and still failed: {}",
            self.retried_duplicates, self.duplicates_by_failed_fate, self.retried_and_failed
        );
        let _ = writeln!(s, "  POST errors: {:?}", self.post_errors);
        let _ = writeln!(
            s,
            "  responses cut short by their upstream (head already passed on): {}",
            self.cut
        );
        let _ = writeln!(
            s,
            "  pipelined requests unanswered as the connection ended, processed nowhere: {}",
            self.unanswered
        );
        let _ = writeln!(
            s,
            "  responses by number of interim responses: {:?}",
            self.interim
        );
        let _ = write!(
            s,
            "  failed before any upstream read them: {}",
            self.failed_unseen
        );
        s
    }
}

fn fate_name(fate: Fate) -> &'static str {
    match fate {
        Fate::Pending => "pending",
        Fate::Answered(s) if (200..300).contains(&s) => "2xx",
        Fate::Answered(503) => "503",
        Fate::Answered(_) => "other-status",
        Fate::Reset => "reset",
        Fate::Closed => "closed",
        Fate::Truncated => "truncated",
        Fate::Killed => "killed",
    }
}

/// Reconcile `reports` (the clients') with `arrivals` (the upstreams' ledger) for requests
/// `plans`, treated as `treatments` say.
pub fn reconcile(
    plans: &[Planned],
    treatments: &[Treatment],
    reports: &[ClientReport],
    arrivals: &HashMap<u64, Vec<Arrival>>,
) -> Reconciliation {
    let mut rec = Reconciliation::default();
    for report in reports {
        rec.violations.extend(report.violations.iter().cloned());
    }
    // Exactly one client outcome per id.
    let mut outcomes: Vec<Option<&Outcome>> = vec![None; plans.len()];
    for (id, outcome) in reports.iter().flat_map(|r| r.outcomes.iter()) {
        match outcomes.get_mut(*id as usize) {
            Some(slot @ None) => *slot = Some(outcome),
            Some(Some(_)) => rec.violation(*id, "sent twice by the clients".into()),
            None => rec.violation(*id, "not a planned id".into()),
        }
    }
    for id in arrivals.keys().filter(|&&id| id >= plans.len() as u64) {
        rec.violation(*id, "reached an upstream but was never planned".into());
    }
    let none = Vec::new();
    for (id, plan) in plans.iter().enumerate() {
        let id = id as u64;
        let seen = arrivals.get(&id).unwrap_or(&none);
        for a in seen {
            *rec.fates.entry(fate_name(a.fate)).or_default() += 1;
        }
        let Some(outcome) = outcomes[id as usize] else {
            rec.violation(id, "no client sent it".into());
            continue;
        };
        check_id(&mut rec, id, plan, outcome, seen);
        if let (Outcome::Response(answer), Some(treatment)) = (outcome, treatments.get(id as usize))
        {
            check_interim(&mut rec, id, plan, treatment, &answer.interim);
        }
    }
    rec
}

/// Interim responses: at most one `100 Continue` (only to an `Expect: 100-continue`), at
/// most one `103 Early Hints` (only for an id the upstreams send it for), whatever number
/// of attempts the proxy made; nothing else.
fn check_interim(
    rec: &mut Reconciliation,
    id: u64,
    plan: &Planned,
    treatment: &Treatment,
    interim: &[u16],
) {
    let count = |status: u16| interim.iter().filter(|&&s| s == status).count();
    let allowed = |status: u16| match status {
        100 => usize::from(plan.expect_continue),
        103 => usize::from(treatment.early_hints),
        _ => 0,
    };
    *rec.interim.entry(interim.len()).or_default() += 1;
    let mut statuses = interim.to_vec();
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        if count(status) > allowed(status) {
            rec.violation(
                id,
                format!(
                    "the client got interim {status} {} time(s) (at most {} allowed): {interim:?}",
                    count(status),
                    allowed(status)
                ),
            );
        }
    }
}

fn check_id(
    rec: &mut Reconciliation,
    id: u64,
    plan: &Planned,
    outcome: &Outcome,
    seen: &[Arrival],
) {
    let idempotent = plan.method == "GET";
    for a in seen {
        if a.method != plan.method || a.body != plan.body_bytes() {
            rec.violation(
                id,
                format!(
                    "{} received {} with a {}-byte body; the client sent {} with {} bytes",
                    upstream_name(a.upstream),
                    a.method,
                    a.body.len(),
                    plan.method,
                    plan.body_bytes().len()
                ),
            );
        }
        if a.fate == Fate::Pending {
            rec.violation(
                id,
                format!("{} never settled it", upstream_name(a.upstream)),
            );
        }
    }
    let trail = || {
        seen.iter()
            .map(|a| format!("{}:{:?}#{}", upstream_name(a.upstream), a.fate, a.order))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !idempotent && seen.len() > 1 {
        rec.violation(
            id,
            format!(
                "{} reached the upstreams {} times: {}",
                plan.method,
                seen.len(),
                trail()
            ),
        );
    }
    let answer = match outcome {
        Outcome::Cut(why) => {
            // Only a response the upstream itself cut short may reach the client cut short
            // (its head was already passed on), and only from its last attempt.
            match seen.last() {
                Some(last)
                    if last.fate == Fate::Truncated
                        && !seen.iter().any(|a| a.fate.is_success()) =>
                {
                    rec.cut += 1;
                }
                _ => rec.violation(
                    id,
                    format!(
                        "{} was cut short ({why}); upstreams: [{}]",
                        plan.method,
                        trail()
                    ),
                ),
            }
            return;
        }
        Outcome::Unanswered(why) => {
            // Pipelined behind a response that ended the connection: the client may send it
            // again only if nothing processed it.
            if seen.is_empty() {
                rec.unanswered += 1;
            } else {
                rec.violation(
                    id,
                    format!(
                        "{} was never answered ({why}) but reached the upstreams: [{}]",
                        plan.method,
                        trail()
                    ),
                );
            }
            return;
        }
        Outcome::Lost(why) => {
            rec.violation(
                id,
                format!(
                    "{} got no response ({why}); upstreams: [{}]",
                    plan.method,
                    trail()
                ),
            );
            return;
        }
        Outcome::Response(answer) => answer,
    };
    let producer = match (answer.upstream, &answer.proxy_error) {
        (Some(i), _) => upstream_name(i),
        (None, Some(kind)) => format!("proxy:{kind}"),
        (None, None) => "unknown".to_string(),
    };
    *rec.statuses
        .entry(format!("{} {producer}", answer.status))
        .or_default() += 1;
    if answer.upstream.is_some() {
        let expected = receipt(id, plan.method, plan.body_bytes());
        if answer.echoed_id.as_deref() != Some(id.to_string().as_str())
            || answer.body != expected.as_bytes()
        {
            rec.violation(
                id,
                format!(
                    "got the response to another request: x-request-id {:?}, body {:?}",
                    answer.echoed_id,
                    String::from_utf8_lossy(&answer.body[..answer.body.len().min(80)])
                ),
            );
            return;
        }
    }
    let successes: Vec<&Arrival> = seen.iter().filter(|a| a.fate.is_success()).collect();
    if answer.is_success() {
        rec.successes += 1;
        let Some(by) = answer.upstream else {
            rec.violation(id, format!("{} without x-upstream", answer.status));
            return;
        };
        if successes.len() != 1 || successes[0].upstream != by {
            rec.violation(
                id,
                format!(
                    "answered {} by {}, but the upstreams answered 2xx {} time(s): [{}]",
                    answer.status,
                    upstream_name(by),
                    successes.len(),
                    trail()
                ),
            );
            return;
        }
        if seen.len() > 1 {
            // Only a GET whose other attempts all failed at the upstream may be repeated, and
            // an upstream that answered (503, reset, close) did so before the proxy could
            // retry. A request an upstream read while being killed is recorded when the
            // kill lets go of it, which may be after the retry succeeded: its place in the
            // order says nothing, its fate is what counts.
            let success_order = successes[0].order;
            let earlier_failed = seen
                .iter()
                .filter(|a| !a.fate.is_success())
                .all(|a| a.fate == Fate::Killed || a.order < success_order);
            if !idempotent || !earlier_failed {
                rec.violation(
                    id,
                    format!("{} repeated without cause: [{}]", plan.method, trail()),
                );
                return;
            }
            rec.retried_duplicates += 1;
            if let Some(failed) = seen.iter().find(|a| !a.fate.is_success()) {
                *rec.duplicates_by_failed_fate
                    .entry(fate_name(failed.fate))
                    .or_default() += 1;
            }
        }
        return;
    }
    // An error response: a proper one, and no upstream success behind it.
    if !matches!(answer.status, 502..=504) {
        rec.violation(
            id,
            format!("unexpected status {} from {producer}", answer.status),
        );
    }
    if !successes.is_empty() {
        rec.violation(
            id,
            format!(
                "the client got {} from {producer} although {} answered 2xx: [{}]",
                answer.status,
                upstream_name(successes[0].upstream),
                trail()
            ),
        );
    }
    if let Some(by) = answer.upstream {
        // The upstream's own error, passed on: it is the last attempt.
        match seen.last() {
            Some(last) if last.upstream == by && last.fate == Fate::Answered(answer.status) => {}
            _ => rec.violation(
                id,
                format!(
                    "{} from {} is not its last attempt: [{}]",
                    answer.status,
                    upstream_name(by),
                    trail()
                ),
            ),
        }
    }
    if seen.is_empty() {
        rec.failed_unseen += 1;
    }
    if seen.len() > 1 {
        rec.retried_and_failed += 1;
    }
    if !idempotent {
        *rec.post_errors
            .entry(format!("{} {producer}", answer.status))
            .or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gated_load::Answer;

    fn get() -> Planned {
        Planned {
            method: "GET",
            body: None,
            chunked: false,
            expect_continue: false,
            close: false,
        }
    }

    fn post() -> Planned {
        Planned {
            body: Some(b"order".to_vec()),
            method: "POST",
            ..get()
        }
    }

    fn arrival(upstream: usize, plan: &Planned, order: u64, fate: Fate) -> Arrival {
        Arrival {
            upstream,
            method: plan.method.to_string(),
            body: plan.body_bytes().to_vec(),
            order,
            fate,
        }
    }

    /// The response upstream `by` sends to request `id`.
    fn from_upstream(id: u64, plan: &Planned, status: u16, by: usize) -> Outcome {
        Outcome::Response(Answer {
            status,
            upstream: Some(by),
            proxy_error: None,
            echoed_id: Some(id.to_string()),
            body: receipt(id, plan.method, plan.body_bytes()).into_bytes(),
            interim: Vec::new(),
        })
    }

    fn from_proxy(status: u16, kind: &str) -> Outcome {
        Outcome::Response(Answer {
            status,
            upstream: None,
            proxy_error: Some(kind.to_string()),
            echoed_id: None,
            body: Vec::new(),
            interim: Vec::new(),
        })
    }

    /// Reconcile one request: its plan, what its client saw, what the upstreams recorded.
    fn one(plan: Planned, outcome: Outcome, seen: Vec<Arrival>) -> Reconciliation {
        let report = ClientReport {
            outcomes: vec![(0, outcome)],
            ..ClientReport::default()
        };
        let arrivals = if seen.is_empty() {
            HashMap::new()
        } else {
            HashMap::from([(0, seen)])
        };
        reconcile(&[plan], &[Treatment::default()], &[report], &arrivals)
    }

    #[test]
    fn what_may_happen_is_counted_not_flagged() {
        let (g, p) = (get(), post());
        let r = one(
            g.clone(),
            from_upstream(0, &g, 200, 1),
            vec![arrival(1, &g, 0, Fate::Answered(200))],
        );
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.successes, 1);
        // A GET retried after a reset, and after a kill recorded late.
        for (fate, order) in [(Fate::Reset, 0), (Fate::Killed, 9)] {
            let seen = vec![
                arrival(0, &g, order, fate),
                arrival(1, &g, 1, Fate::Answered(200)),
            ];
            let r = one(g.clone(), from_upstream(0, &g, 200, 1), seen);
            assert!(r.violations.is_empty(), "{fate:?}: {:?}", r.violations);
            assert_eq!(r.retried_duplicates, 1, "{fate:?}");
        }
        // A POST the upstream reset, answered 502; the upstream's own 503 passed on.
        let r = one(
            p.clone(),
            from_proxy(502, "upstream-closed"),
            vec![arrival(0, &p, 0, Fate::Reset)],
        );
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        let r = one(
            p.clone(),
            from_upstream(0, &p, 503, 2),
            vec![arrival(2, &p, 0, Fate::Answered(503))],
        );
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        // A response its upstream cut short.
        let r = one(
            g.clone(),
            Outcome::Cut("cut".into()),
            vec![arrival(0, &g, 0, Fate::Truncated)],
        );
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.cut, 1);
        // A pipelined request nothing processed, left unanswered.
        let r = one(p.clone(), Outcome::Unanswered("closed".into()), vec![]);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.unanswered, 1);
    }

    #[test]
    fn every_breach_is_flagged() {
        let (g, p) = (get(), post());
        let cases: Vec<(&str, Planned, Outcome, Vec<Arrival>)> = vec![
            ("lost", g.clone(), Outcome::Lost("eof".into()), vec![]),
            (
                "POST twice",
                p.clone(),
                from_upstream(0, &p, 200, 1),
                vec![
                    arrival(0, &p, 0, Fate::Reset),
                    arrival(1, &p, 1, Fate::Answered(200)),
                ],
            ),
            (
                "two successes",
                g.clone(),
                from_upstream(0, &g, 200, 1),
                vec![
                    arrival(0, &g, 0, Fate::Answered(200)),
                    arrival(1, &g, 1, Fate::Answered(200)),
                ],
            ),
            (
                "retried after the success",
                g.clone(),
                from_upstream(0, &g, 200, 0),
                vec![
                    arrival(0, &g, 0, Fate::Answered(200)),
                    arrival(1, &g, 1, Fate::Reset),
                ],
            ),
            (
                "success turned into an error",
                g.clone(),
                from_proxy(502, "upstream-closed"),
                vec![arrival(0, &g, 0, Fate::Answered(200))],
            ),
            (
                "answered by another upstream than the one that succeeded",
                g.clone(),
                from_upstream(0, &g, 200, 1),
                vec![arrival(0, &g, 0, Fate::Answered(200))],
            ),
            (
                "another request's response",
                g.clone(),
                from_upstream(7, &g, 200, 0),
                vec![arrival(0, &g, 0, Fate::Answered(200))],
            ),
            (
                "body altered",
                p.clone(),
                from_upstream(0, &p, 200, 0),
                vec![Arrival {
                    body: b"other".to_vec(),
                    ..arrival(0, &p, 0, Fate::Answered(200))
                }],
            ),
            (
                "cut short by nobody",
                g.clone(),
                Outcome::Cut("cut".into()),
                vec![arrival(0, &g, 0, Fate::Answered(200))],
            ),
            ("a 400", g.clone(), from_proxy(400, "bad-request"), vec![]),
            (
                "unanswered but processed",
                p.clone(),
                Outcome::Unanswered("closed".into()),
                vec![arrival(0, &p, 0, Fate::Answered(200))],
            ),
        ];
        for (what, plan, outcome, seen) in cases {
            let r = one(plan, outcome, seen);
            assert!(!r.violations.is_empty(), "{what} was not flagged");
        }
        // Interim responses: a 100 Continue twice.
        let mut twice = from_upstream(0, &p, 200, 0);
        if let Outcome::Response(a) = &mut twice {
            a.interim = vec![100, 100];
        }
        let r = one(
            Planned {
                expect_continue: true,
                ..p.clone()
            },
            twice,
            vec![arrival(0, &p, 0, Fate::Answered(200))],
        );
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    }
}
