//! Watches: the backlog after the requested version (or the current objects), then live
//! changes through the request's selectors, bookmarks, `410 Gone` when expired, and the
//! end at `timeoutSeconds` (a last bookmark, then the last chunk).

use super::request::Request;
use super::{
    error_event, event_json, record, text_at, version_of, write_chunk, Delivered, Kind, Shared,
    Signal, Trigger,
};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How a watch stream ended.
enum WatchEnd {
    /// Last chunk written: the connection can serve the next request.
    Ended,
    /// Cut, or the client went away.
    Cut,
}

/// Serves a watch; true when the stream ended cleanly (the connection goes on).
pub(super) async fn serve_watch(
    stream: &mut TcpStream,
    shared: &Shared,
    request: &Request,
) -> bool {
    let from: Option<u64> = request
        .param("resourceVersion")
        .and_then(|version| version.parse().ok())
        .filter(|version| *version > 0);
    let bookmarks = request.param("allowWatchBookmarks") == Some("true");
    let timeout = request
        .param("timeoutSeconds")
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .filter(|seconds| *seconds > 0)
        .map(Duration::from_secs);
    record(shared, request, 200);
    let (mut live, backlog, mut seen, error, watch) = {
        let mut state = shared.lock();
        state.watch_count += 1;
        let watch = state.watch_count;
        let live = shared.signals.subscribe();
        let version = state.version;
        match from {
            Some(from) if from + 1 < state.oldest_watchable => {
                let message = format!("too old resource version: {from} ({version})");
                (
                    live,
                    Vec::new(),
                    version,
                    Some((410, "Expired", message)),
                    watch,
                )
            }
            Some(from) if from > version => {
                let message = format!("Too large resource version: {from}, current: {version}");
                (
                    live,
                    Vec::new(),
                    version,
                    Some((504, "Timeout", message)),
                    watch,
                )
            }
            Some(from) => {
                let backlog = state
                    .history
                    .iter()
                    .filter(|change| change.version > from)
                    .filter_map(|change| request.event_for(change))
                    .collect();
                (live, backlog, version, None, watch)
            }
            None => {
                let backlog = state
                    .objects
                    .iter()
                    .filter(|((kind, _, _), object)| request.matches(*kind, object))
                    .map(|(_, object)| ("ADDED", object.clone()))
                    .collect();
                (live, backlog, version, None, watch)
            }
        }
    };
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    if let Some((code, reason, message)) = error {
        let _ = write_chunk(stream, &error_event(code, reason, &message)).await;
        return stream.write_all(b"0\r\n\r\n").await.is_ok();
    }
    let deliver = |event_type: &'static str, object: &Value| Delivered {
        kind: request.kind,
        event_type,
        name: text_at(object, &["metadata", "name"]),
        version: version_of(object),
        watch,
    };
    for (event_type, object) in backlog {
        shared.lock().delivered.push(deliver(event_type, &object));
        if write_chunk(stream, &event_json(event_type, &object))
            .await
            .is_err()
        {
            return false;
        }
    }
    let deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
    let end = loop {
        let signal = match deadline {
            Some(deadline) => tokio::select! {
                signal = live.recv() => Some(signal),
                () = tokio::time::sleep_until(deadline) => None,
            },
            None => Some(live.recv().await),
        };
        match signal {
            Some(Ok(Signal::Change(change))) => {
                seen = seen.max(change.version);
                if let Some((event_type, object)) = request.event_for(&change) {
                    shared.lock().delivered.push(deliver(event_type, &object));
                    if write_chunk(stream, &event_json(event_type, &object))
                        .await
                        .is_err()
                    {
                        break WatchEnd::Cut;
                    }
                }
            }
            Some(Ok(Signal::Bookmark)) => {
                if bookmarks
                    && write_bookmark(stream, shared, request.kind, seen)
                        .await
                        .is_err()
                {
                    break WatchEnd::Cut;
                }
            }
            Some(Ok(Signal::Expire)) => {
                let message = format!("too old resource version: {seen}");
                let _ = write_chunk(stream, &error_event(410, "Expired", &message)).await;
                break WatchEnd::Ended;
            }
            // Cut: close the socket without the final chunk, as a broken network would.
            Some(Ok(Signal::Drop)) | Some(Err(_)) => break WatchEnd::Cut,
            // The timeout: a last bookmark (as the API server sends before a watch's
            // deadline), then the end of the stream.
            None => {
                if bookmarks
                    && write_bookmark(stream, shared, request.kind, seen)
                        .await
                        .is_err()
                {
                    break WatchEnd::Cut;
                }
                *shared
                    .lock()
                    .watch_timeouts
                    .entry(request.kind)
                    .or_default() += 1;
                shared.fire(Trigger::WatchTimeout(request.kind));
                break WatchEnd::Ended;
            }
        }
    };
    match end {
        WatchEnd::Ended => stream.write_all(b"0\r\n\r\n").await.is_ok(),
        WatchEnd::Cut => false,
    }
}

async fn write_bookmark(
    stream: &mut TcpStream,
    shared: &Shared,
    kind: Kind,
    version: u64,
) -> std::io::Result<()> {
    *shared.lock().bookmarks.entry(kind).or_default() += 1;
    let object = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind(),
        "metadata": { "resourceVersion": version.to_string() },
    });
    write_chunk(stream, &event_json("BOOKMARK", &object)).await
}
