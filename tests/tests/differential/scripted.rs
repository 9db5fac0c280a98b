//! A scripted upstream for the differential test: it answers the n-th request it receives
//! (over all its connections) with the n-th response of the case, byte for byte, and keeps
//! every byte each connection brought until that connection closed.
//!
//! A request is complete when [`message::read_request`] says so; bytes that do not form a
//! request get no answer, and the upstream closes its side (they stay in the capture). When the script has run out, the
//! connection is closed without an answer, so a proxy waiting for one fails fast (502) instead
//! of waiting for its timeout.

use crate::corpus::Scripted;
use crate::message::{self, Read as MessageRead};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// A connection that neither sends nor closes for this long ends its capture with an error:
/// a bound that only turns a hang into a failure.
const IDLE_BOUND: Duration = Duration::from_secs(30);

struct Shared {
    script: Vec<Scripted>,
    next_response: AtomicUsize,
    stopping: AtomicBool,
    /// Per accepted connection, in accept order: every byte received.
    captures: Mutex<Vec<Vec<u8>>>,
    errors: Mutex<Vec<String>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the upstream saw.
#[derive(Debug, Clone)]
pub struct Capture {
    /// Bytes received on each connection, in accept order.
    pub connections: Vec<Vec<u8>>,
    /// Failures of the upstream itself (read time-outs, write errors).
    pub errors: Vec<String>,
}

/// A running scripted upstream on 127.0.0.1.
pub struct ScriptedUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl ScriptedUpstream {
    pub fn start(script: Vec<Scripted>) -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the scripted upstream");
        let addr = listener.local_addr().expect("scripted upstream address");
        let shared = Arc::new(Shared {
            script,
            next_response: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            captures: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, accept_shared));
        ScriptedUpstream {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting and wait for every connection to be closed by the proxy (stop the
    /// proxy first), then return what arrived.
    pub fn finish(mut self) -> Capture {
        self.stop();
        Capture {
            connections: lock(&self.shared.captures).clone(),
            errors: lock(&self.shared.errors).clone(),
        }
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        let _ = accept.join();
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let id = {
            let mut captures = lock(&shared.captures);
            captures.push(Vec::new());
            captures.len() - 1
        };
        let conn_shared = shared.clone();
        let handle = std::thread::spawn(move || {
            if let Err(e) = serve(&conn_shared, stream, id) {
                lock(&conn_shared.errors).push(format!("connection {id}: {e}"));
            }
        });
        lock(&shared.threads).push(handle);
    }
}

fn serve(shared: &Shared, mut stream: TcpStream, id: usize) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_BOUND))?;
    let mut buf: Vec<u8> = Vec::new();
    let mut parsed_to = 0;
    let mut answering = true;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        lock(&shared.captures)[id].extend_from_slice(&chunk[..n]);
        while answering {
            match message::read_request(&buf[parsed_to..]) {
                MessageRead::Incomplete => break,
                MessageRead::Invalid(_) => {
                    // As a server would after a 400: no answer, and close, so the proxy
                    // does not wait for its timeout.
                    let _ = stream.shutdown(Shutdown::Write);
                    answering = false;
                }
                MessageRead::Complete(_, used) => {
                    parsed_to += used;
                    let index = shared.next_response.fetch_add(1, Ordering::SeqCst);
                    let Some(response) = shared.script.get(index) else {
                        // Out of script: close, so the proxy answers at once.
                        let _ = stream.shutdown(Shutdown::Write);
                        answering = false;
                        break;
                    };
                    stream.write_all(&response.bytes)?;
                    if response.close_after {
                        stream.shutdown(Shutdown::Write)?;
                        answering = false;
                    }
                }
            }
        }
    }
}
