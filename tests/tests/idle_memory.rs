//! What an idle client connection costs the proxy in heap memory, on both drivers: a
//! connection that has sent nothing yet, and a keep-alive connection after its response,
//! each hold no read buffer and no runtime timer of their own, only a small task and a
//! slot in their core's idle timers. Counted with a counting global allocator (this test
//! binary's own), so the numbers are bytes, not timings.
//!
//! The proxy runs in this process with one core; the test's clients and its upstream use
//! stack buffers only, so what the allocator sees grow is the proxy's.

use coremesh_tests::admin::{start_with_admin, wait_for_admin, AdminProxy};
use coremesh_tests::proxy::{for_each_driver, one_service};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Live heap bytes of the whole process.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes straight to the system allocator with the same arguments; the
// counter is only arithmetic on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Idle connections opened per driver: enough that one-off growth (a doubled vector)
/// weighs little per connection.
const CONNECTIONS: usize = 400;
/// Most heap bytes one idle connection may hold. A read buffer alone is 16 KiB and a
/// runtime timer about 0.5 KiB; the connection's task, its socket's registration and its
/// idle-timer slot are what is left.
const MAX_BYTES_PER_IDLE_CONNECTION: isize = 1024;
/// Bound on every wait for a condition: only turns a hang into a failure.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// An upstream answering every request with [`RESPONSE`], allocating nothing per request.
struct FixedUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FixedUpstream {
    fn start() -> FixedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        let addr = listener.local_addr().expect("upstream address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                std::thread::spawn(move || answer_requests(conn));
            }
        });
        FixedUpstream { addr, stop }
    }
}

impl Drop for FixedUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Answer each request head (bodiless GETs) on `conn` until it closes.
fn answer_requests(mut conn: TcpStream) {
    let mut buf = [0u8; 4096];
    let mut len = 0;
    loop {
        match conn.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        while let Some(end) = find(&buf[..len], b"\r\n\r\n") {
            if conn.write_all(RESPONSE).is_err() {
                return;
            }
            buf.copy_within(end + 4..len, 0);
            len -= end + 4;
        }
        if len == buf.len() {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One GET on `conn`, reading the whole response (stack buffer only).
fn get(conn: &mut TcpStream) {
    conn.write_all(b"GET /idle HTTP/1.1\r\nhost: idle\r\n\r\n")
        .expect("send a request");
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while !buf[..len].ends_with(b"\r\n\r\nok") {
        let n = conn.read(&mut buf[len..]).expect("read the response");
        assert!(n > 0, "the proxy closed before answering");
        len += n;
    }
    assert!(
        buf[..len].starts_with(b"HTTP/1.1 200"),
        "answered: {}",
        String::from_utf8_lossy(&buf[..len])
    );
}

/// The proxy's gauge of open client connections, once it equals `want`.
fn wait_for_open_connections(proxy: &AdminProxy, want: u64) {
    let seen = wait_for_admin(|| {
        let text = proxy.metrics_text();
        let open: u64 = text
            .lines()
            .filter(|l| l.starts_with("coremesh_tcp_connections_open"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        ((open == want).then_some(()), format!("{open} open"))
    });
    if let Err(last) = seen {
        panic!("waiting for {want} open client connections: {last}");
    }
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn idle_connections_hold_no_buffer_and_no_timer_of_their_own() {
    for_each_driver(|driver| {
        let upstream = FixedUpstream::start();
        let proxy = start_with_admin(driver, one_service(&[upstream.addr]));
        // Warm: the core's buffer, scratch and upstream connection exist, the admin path
        // has run once.
        let mut warm = TcpStream::connect(proxy.addr()).expect("connect");
        get(&mut warm);
        wait_for_open_connections(&proxy, 1);
        let before = live();

        // New connections that send nothing.
        let mut conns: Vec<TcpStream> = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            conns.push(TcpStream::connect(proxy.addr()).expect("connect"));
        }
        wait_for_open_connections(&proxy, CONNECTIONS as u64 + 1);
        let per_new = (live() - before) / CONNECTIONS as isize;
        println!("{driver:?}: {per_new} bytes per new idle connection");
        assert!(
            per_new <= MAX_BYTES_PER_IDLE_CONNECTION,
            "a connection that has sent nothing holds {per_new} bytes, more than \
             {MAX_BYTES_PER_IDLE_CONNECTION}"
        );

        // The same connections after one request each: kept alive, idle again. Each gives
        // its buffer back once its response is out, so wait for that (bounded).
        for c in &mut conns {
            get(c);
        }
        let began = Instant::now();
        let mut per_kept = isize::MAX;
        while began.elapsed() < WAIT_LIMIT {
            per_kept = (live() - before) / CONNECTIONS as isize;
            if per_kept <= MAX_BYTES_PER_IDLE_CONNECTION {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("{driver:?}: {per_kept} bytes per idle keep-alive connection");
        assert!(
            per_kept <= MAX_BYTES_PER_IDLE_CONNECTION,
            "an idle keep-alive connection holds {per_kept} bytes, more than \
             {MAX_BYTES_PER_IDLE_CONNECTION} (a read buffer kept between requests?)"
        );
        drop(conns);
        drop(warm);
        drop(proxy);
    });
}
