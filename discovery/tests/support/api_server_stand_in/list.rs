//! Lists: one page at a time (`limit`), later pages (`continue`) from a snapshot as of the
//! first page's version, and `410 Gone` once that version is compacted.

use super::request::{bad_request, Refusal, Request};
use super::{record, status_json, write_response, Key, Shared, Trigger};
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// A `continue` token: the version the list started at, and the last key served.
fn continue_token(version: u64, namespace: &str, name: &str) -> String {
    format!("{version}/{namespace}/{name}")
}

fn parse_continue(token: &str) -> Option<(u64, String, String)> {
    let mut parts = token.splitn(3, '/');
    let version = parts.next()?.parse().ok()?;
    Some((version, parts.next()?.to_owned(), parts.next()?.to_owned()))
}

const EXPIRED_CONTINUE: &str = "The provided continue parameter is too old to display a \
    consistent list result. You can start a new list without the continue parameter, or \
    use the continue value from the response.";

/// Answers a list (one page of it); false when the connection failed.
pub(super) async fn serve_list(stream: &mut TcpStream, shared: &Shared, request: &Request) -> bool {
    if request.param("continue").is_some() {
        shared.fire(Trigger::ContinuedList(request.kind));
    }
    let answer = list_page(shared, request);
    let (status, body) = match answer {
        Ok(body) => (200, body),
        Err((status, reason, message)) => (status, status_json(status, reason, &message)),
    };
    record(shared, request, status);
    write_response(stream, status, &body).await.is_ok()
}

fn list_page(shared: &Shared, request: &Request) -> Result<Value, Refusal> {
    let mut state = shared.lock();
    let limit = request
        .param("limit")
        .and_then(|limit| limit.parse::<usize>().ok())
        .filter(|limit| *limit > 0);
    let (version, after) = match request.param("continue") {
        Some(token) => {
            let Some((version, namespace, name)) = parse_continue(token) else {
                return Err(bad_request(format!("invalid continue token {token:?}")));
            };
            if !state.list_snapshots.contains_key(&version) {
                return Err((410, "Expired", EXPIRED_CONTINUE.to_owned()));
            }
            (version, Some((request.kind, namespace, name)))
        }
        None => {
            if let Some(asked) = request
                .param("resourceVersion")
                .and_then(|version| version.parse::<u64>().ok())
            {
                if asked > state.version {
                    let message = format!("Too large resource version: {asked}");
                    return Err((504, "Timeout", message));
                }
            }
            (state.version, None)
        }
    };
    let objects = match after {
        Some(_) => state
            .list_snapshots
            .get(&version)
            .cloned()
            .unwrap_or_default(),
        None => state.objects.clone(),
    };
    let mut matching = objects
        .iter()
        .filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after))
        .filter(|((kind, _, _), object)| request.matches(*kind, object));
    let items: Vec<(Key, Value)> = matching
        .by_ref()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(key, object)| (key.clone(), object.clone()))
        .collect();
    let more = matching.next().is_some();
    let mut metadata = json!({ "resourceVersion": version.to_string() });
    if more {
        if let Some(((_, namespace, name), _)) = items.last() {
            metadata["continue"] = json!(continue_token(version, namespace, name));
        }
        state.list_snapshots.entry(version).or_insert(objects);
    }
    Ok(json!({
        "apiVersion": request.kind.api_version(),
        "kind": request.kind.list_kind(),
        "metadata": metadata,
        "items": items.into_iter().map(|(_, object)| object).collect::<Vec<_>>(),
    }))
}
