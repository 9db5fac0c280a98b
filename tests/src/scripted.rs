//! An upstream that answers with exact bytes: for every request head it reads (bodies are
//! not expected), it writes whatever its script returns, verbatim, and keeps the connection
//! open; a test may also write to an open connection at any time. For what the programmable
//! [`crate::upstream::Upstream`] will not send: several responses in one write, bytes on an
//! idle connection, malformed heads.
//!
//! Lifecycle: [`ScriptedUpstream::start`] binds 127.0.0.1:0 and spawns an accept thread;
//! drop stops accepting, shuts every connection down and joins every thread.

use crate::wire::WireReader;
use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// The script: (connection number, request number on it, the request head) to the bytes to
/// send back.
type Script = dyn Fn(u64, u64, &[u8]) -> Vec<u8> + Send + Sync;

struct Shared {
    script: Box<Script>,
    stopping: AtomicBool,
    /// Every request head read: (connection, index on it, head).
    heads: Mutex<Vec<(u64, u64, Vec<u8>)>>,
    streams: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running scripted upstream.
pub struct ScriptedUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl ScriptedUpstream {
    pub fn start(
        script: impl Fn(u64, u64, &[u8]) -> Vec<u8> + Send + Sync + 'static,
    ) -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            script: Box::new(script),
            stopping: AtomicBool::new(false),
            heads: Mutex::new(Vec::new()),
            streams: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        let accept_thread = std::thread::Builder::new()
            .name("scripted-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawn the accept thread");
        ScriptedUpstream {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request head read so far: (connection, index on it, head bytes).
    pub fn heads(&self) -> Vec<(u64, u64, Vec<u8>)> {
        lock(&self.shared.heads).clone()
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        lock(&self.shared.streams).len()
    }

    /// The far-end (proxy-side) address of connection `conn`.
    pub fn peer_of(&self, conn: u64) -> Option<SocketAddr> {
        lock(&self.shared.streams)
            .get(&conn)
            .and_then(|s| s.peer_addr().ok())
    }

    /// Write `bytes` on connection `conn` now, whatever it is doing.
    pub fn write_to(&self, conn: u64, bytes: &[u8]) -> std::io::Result<()> {
        let streams = lock(&self.shared.streams);
        let mut stream = streams
            .get(&conn)
            .ok_or_else(|| std::io::Error::other(format!("no connection {conn}")))?;
        stream.write_all(bytes)
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        let Some(accept_thread) = self.accept_thread.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        let _ = accept_thread.join();
        for stream in lock(&self.shared.streams).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next = 0u64;
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let (Ok(kept), Ok(writer)) = (stream.try_clone(), stream.try_clone()) else {
            continue;
        };
        let conn = next;
        next += 1;
        lock(&shared.streams).insert(conn, kept);
        let conn_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("scripted-conn-{conn}"))
            .spawn(move || serve(&conn_shared, stream, writer, conn));
        if let Ok(handle) = spawned {
            lock(&shared.threads).push(handle);
        }
    }
}

fn serve(shared: &Shared, stream: TcpStream, mut writer: TcpStream, conn: u64) {
    let mut reader = WireReader::new(stream);
    let mut index = 0u64;
    while let Ok(Some(head)) = reader.read_head("a request head") {
        lock(&shared.heads).push((conn, index, head.clone()));
        let reply = (shared.script)(conn, index, &head);
        if writer.write_all(&reply).is_err() {
            break;
        }
        index += 1;
    }
    let _ = writer.shutdown(Shutdown::Both);
}
