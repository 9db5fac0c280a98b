//! Bytes through an upgraded tunnel are counted once, on both drivers: a client that sends
//! bytes right behind its upgrade request (they are read, and buffered, with the head) and
//! then more through the tunnel, against a raw upstream that answers 101 and echoes. The
//! byte counters of both peers must equal what each socket really carried.

use coremesh_tests::admin::start_with_admin;
use coremesh_tests::prometheus::Exposition;
use coremesh_tests::proxy::{for_each_driver, one_service};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Turns a hang into a failure; nothing waits for it on a working run.
const BOUND: Duration = Duration::from_secs(30);

const UPGRADE: &[u8] =
    b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n";
const SWITCHED: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n";
/// Sent in the same write as the upgrade request: buffered by the proxy with the head.
const EARLY: &[u8] = b"early bytes behind the head";
/// Sent once the 101 is in.
const LATER: &[u8] = b"later bytes through the tunnel";

/// What the raw upstream read and wrote on its one connection.
struct Carried {
    read: usize,
    written: usize,
}

/// A raw upstream: reads a head, answers 101, then echoes until the proxy half-closes.
fn switching_upstream() -> (SocketAddr, JoinHandle<Carried>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let addr = listener.local_addr().expect("upstream address");
    let thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept the proxy");
        s.set_read_timeout(Some(BOUND)).expect("read timeout");
        let mut carried = Carried {
            read: 0,
            written: 0,
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = read_retrying(&mut s, &mut buf).expect("read the head");
            assert!(n > 0, "closed inside the head");
            head.extend_from_slice(&buf[..n]);
        }
        carried.read += head.len();
        s.write_all(SWITCHED).expect("write the 101");
        carried.written += SWITCHED.len();
        let at = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head end")
            + 4;
        let after = head[at..].to_vec();
        s.write_all(&after).expect("echo");
        carried.written += after.len();
        loop {
            match read_retrying(&mut s, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    carried.read += n;
                    s.write_all(&buf[..n]).expect("echo");
                    carried.written += n;
                }
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        carried
    });
    (addr, thread)
}

fn counter(text: &str, name: &str, peer: &str) -> u64 {
    let exposition = Exposition::parse(text).expect("a valid exposition");
    exposition.value(name, &[("peer", peer)]).unwrap_or(0.0) as u64
}

#[test]
fn an_upgraded_tunnel_counts_each_byte_once() {
    for_each_driver(|driver| {
        let (upstream, upstream_thread) = switching_upstream();
        let proxy = start_with_admin(driver, one_service(&[upstream]));
        let mut c = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
        c.set_read_timeout(Some(BOUND)).expect("read timeout");
        let mut first = UPGRADE.to_vec();
        first.extend_from_slice(EARLY);
        c.write_all(&first).expect("send the upgrade");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(EARLY) {
            let n = read_retrying(&mut c, &mut buf).expect("read the 101 and the echo");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 101 "),
            "{}",
            String::from_utf8_lossy(&got)
        );
        c.write_all(LATER).expect("send through the tunnel");
        c.shutdown(Shutdown::Write).expect("half-close");
        loop {
            match read_retrying(&mut c, &mut buf).expect("read to the end") {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        assert!(got.ends_with(LATER));
        let carried = upstream_thread.join().expect("the upstream thread");
        let client_sent = (first.len() + LATER.len()) as u64;
        let client_got = got.len() as u64;

        let started = Instant::now();
        let mut text = proxy.metrics_text();
        while counter(&text, "coremesh_received_bytes_total", "client") < client_sent
            && started.elapsed() < BOUND
        {
            std::thread::sleep(Duration::from_millis(10));
            text = proxy.metrics_text();
        }
        // Read again: a count that went on past the right value shows now.
        let text = proxy.metrics_text();
        let got = |name, peer| counter(&text, name, peer);
        assert_eq!(
            got("coremesh_received_bytes_total", "client"),
            client_sent,
            "bytes read from the client"
        );
        assert_eq!(
            got("coremesh_sent_bytes_total", "client"),
            client_got,
            "bytes written to the client"
        );
        assert_eq!(
            got("coremesh_sent_bytes_total", "upstream"),
            carried.read as u64,
            "bytes written to the upstream"
        );
        assert_eq!(
            got("coremesh_received_bytes_total", "upstream"),
            carried.written as u64,
            "bytes read from the upstream"
        );
    });
}

/// A read that is tried again when a signal interrupted it (`EINTR`: a blocking read with
/// a timeout is not restarted by the kernel).
fn read_retrying(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
