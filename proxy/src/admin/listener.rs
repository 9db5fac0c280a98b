//! The admin server's connections: a tokio current-thread runtime on the admin thread serves
//! every connection as its own task, so a slow client never holds up another (a probe
//! answers while any number of clients stall, up to the cap).
//!
//! Limits (`[proxy]`, see `docs/configuration.md`):
//! - `admin_request_timeout_ms`: the whole request must arrive within it, however it
//!   trickles in; past it the client gets `408` and the connection is closed.
//! - `admin_write_timeout_ms`: the answer must be written within it, else the connection
//!   is closed.
//! - `admin_max_connections`: connections served at once. One more is answered `503` at
//!   once, without reading its request, and closed (its request bytes are read and dropped
//!   until the client closes, for at most the request timeout, so that the close does not
//!   reset the connection under the answer). As many again may wait in that state; beyond
//!   that a connection is closed as soon as it is accepted.
//!
//! Answers that need the cores (`/metrics`, `/endpoints`) or a lock are computed on the
//! runtime's blocking threads; `/live` and `/ready` read two flags on the runtime itself.

use super::request::{parse, AdminRequest, Parsed};
use super::{answer, AdminShared, Answer};
use coremesh_discovery::ProxySettings;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};

/// When the server stops, answers still being computed on blocking threads get this long.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// After a failed accept (out of descriptors and the like), pause rather than spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Bytes read from a client at a time.
const READ_CHUNK: usize = 4096;

/// The admin server's limits, from `[proxy]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    pub request_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
}

impl AdminLimits {
    pub fn from_settings(proxy: &ProxySettings) -> AdminLimits {
        AdminLimits {
            request_timeout: Duration::from_millis(proxy.admin_request_timeout_ms),
            write_timeout: Duration::from_millis(proxy.admin_write_timeout_ms),
            max_connections: proxy.admin_max_connections.max(1),
        }
    }
}

/// Serve on every listener until [`AdminShared::stop_serving`]; the runtime's end then
/// closes the listeners.
pub fn serve(listeners: Vec<std::net::TcpListener>, shared: Arc<AdminShared>) {
    let limits = match shared.config.lock() {
        Ok(config) => AdminLimits::from_settings(&config.proxy),
        Err(_) => AdminLimits::from_settings(&ProxySettings::default()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(limits.max_connections)
        .thread_name("coremesh-admin-work")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("admin server cannot start its runtime: {e}");
            return;
        }
    };
    runtime.block_on(accept_all(listeners, shared, limits));
    runtime.shutdown_timeout(STOP_WAIT);
}

/// The connection slots every listener shares.
#[derive(Clone)]
struct Slots {
    serving: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
}

/// Accept on each listener in a task of its own until the server is stopped.
async fn accept_all(
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<AdminShared>,
    limits: AdminLimits,
) {
    let slots = Slots {
        serving: Arc::new(Semaphore::new(limits.max_connections)),
        refusing: Arc::new(Semaphore::new(limits.max_connections)),
    };
    for listener in listeners {
        tokio::spawn(accept_loop(listener, shared.clone(), limits, slots.clone()));
    }
    shared.stop_accepting.notified().await;
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<AdminShared>,
    limits: AdminLimits,
    slots: Slots,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("admin server cannot use its listener: {e}");
            return;
        }
    };
    let Slots { serving, refusing } = slots;
    loop {
        let accepted = listener.accept().await;
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("admin accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if let Ok(permit) = serving.clone().try_acquire_owned() {
            tokio::spawn(serve_connection(
                stream,
                peer,
                shared.clone(),
                limits,
                permit,
            ));
        } else if let Ok(permit) = refusing.clone().try_acquire_owned() {
            tracing::debug!(%peer, "admin connection over the cap: 503");
            tokio::spawn(refuse_busy(stream, limits, permit));
        } else {
            tracing::debug!(%peer, "admin connection over twice the cap: closed");
        }
    }
}

/// Why no request was read.
enum ReadFailure {
    /// The client closed (or reset) before a whole request: nothing to answer.
    Closed,
    Invalid(&'static str),
}

async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<AdminRequest, ReadFailure> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match parse(buf) {
            Parsed::Complete(request) => return Ok(request),
            Parsed::Invalid(why) => return Err(ReadFailure::Invalid(why)),
            Parsed::Partial => {}
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(ReadFailure::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<AdminShared>,
    limits: AdminLimits,
    permit: OwnedSemaphorePermit,
) {
    let mut buf = Vec::with_capacity(1024);
    let read = timeout(limits.request_timeout, read_request(&mut stream, &mut buf)).await;
    let answer = match read {
        Ok(Ok(request)) => respond_to(request, peer, &shared).await,
        Ok(Err(ReadFailure::Closed)) => return,
        Ok(Err(ReadFailure::Invalid(why))) => Answer::text(400, format!("bad request: {why}\n")),
        Err(_) => {
            tracing::debug!(%peer, "admin request not received within {:?}", limits.request_timeout);
            Answer::text(
                408,
                format!(
                    "request not received within {} ms\n",
                    limits.request_timeout.as_millis()
                ),
            )
        }
    };
    let written = write_and_close(&mut stream, &answer.encode(), limits.write_timeout).await;
    if !written {
        tracing::debug!(%peer, "admin answer not written within {:?}", limits.write_timeout);
    }
    // Free the slot before the socket closes: a client that saw the close may connect again
    // at once and must find the slot free.
    drop(permit);
    drop(stream);
    if written && answer.then_shutdown {
        let _ = shared.shutdown_requests.send(());
    }
}

/// `/live` and `/ready` on the runtime itself, everything else on a blocking thread.
async fn respond_to(request: AdminRequest, peer: SocketAddr, shared: &Arc<AdminShared>) -> Answer {
    let peer = Some(peer.ip());
    if request.method == "GET" && matches!(request.path.as_str(), "/live" | "/ready") {
        return answer(&request, peer, shared);
    }
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || answer(&request, peer, &shared))
        .await
        .unwrap_or_else(|_| Answer::text(500, "internal error\n".into()))
}

/// Write `bytes` and send FIN, within `limit`; whether it all went out.
async fn write_and_close(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> bool {
    let write = async {
        stream.write_all(bytes).await?;
        stream.shutdown().await
    };
    matches!(timeout(limit, write).await, Ok(Ok(())))
}

/// A connection over the cap: `503` at once, then drop what the client sends until it
/// closes (bounded by the request timeout), so the close does not reset the answer away.
async fn refuse_busy(mut stream: TcpStream, limits: AdminLimits, permit: OwnedSemaphorePermit) {
    let busy = Answer::text(
        503,
        format!(
            "too many admin connections (proxy.admin_max_connections = {})\n",
            limits.max_connections
        ),
    );
    if write_and_close(&mut stream, &busy.encode(), limits.write_timeout).await {
        let until = Instant::now() + limits.request_timeout;
        let mut sink = [0u8; READ_CHUNK];
        while let Ok(Ok(n)) = timeout_at(until, stream.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    }
    drop(permit);
}
