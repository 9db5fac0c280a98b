//! The kernel's view of this machine's IPv4 TCP sockets (`/proc/net/tcp`), so that a test
//! can wait until a FIN or bytes have reached a socket instead of sleeping; a listener
//! that lets connects hang, for connect timeouts; and a one-connection TCP echo server.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

/// `TCP_CLOSE_WAIT` in `/proc/net/tcp`: the peer sent its FIN, this side has not closed.
pub const TCP_CLOSE_WAIT: u8 = 0x08;
/// `TCP_ESTABLISHED` in `/proc/net/tcp`.
pub const TCP_ESTABLISHED: u8 = 0x01;

/// What the kernel says of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// `TCP_*` state number.
    pub state: u8,
    /// Bytes received and not yet read by the application.
    pub rx_queue: u32,
    /// Bytes written and not yet acknowledged by the peer.
    pub tx_queue: u32,
}

/// The socket bound to `local` and connected to `remote` (IPv4 only), or `None` when no
/// such socket exists (closed, or never opened).
pub fn tcp_socket(local: SocketAddr, remote: SocketAddr) -> Option<TcpSocket> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let l = parse_address(fields.next()?)?;
        let r = parse_address(fields.next()?)?;
        let state = u8::from_str_radix(fields.next()?, 16).ok()?;
        let (tx, rx) = fields.next()?.split_once(':')?;
        let rx_queue = u32::from_str_radix(rx, 16).ok()?;
        let tx_queue = u32::from_str_radix(tx, 16).ok()?;
        (SocketAddr::V4(l) == local && SocketAddr::V4(r) == remote).then_some(TcpSocket {
            state,
            rx_queue,
            tx_queue,
        })
    })
}

/// The state of the socket bound to `local` and connected to `remote`; see [`tcp_socket`].
pub fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    tcp_socket(local, remote).map(|s| s.state)
}

/// A listener on 127.0.0.1 that never accepts and whose accept queue is full, so the
/// kernel drops every further SYN: a connect to it is neither accepted nor refused, it
/// hangs until the connecting side gives up (a connect timeout without leaving the host).
pub struct SilentListener {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _filler: TcpStream,
}

impl SilentListener {
    /// Listen with a backlog of 0 and fill the queue with one connection that is never
    /// accepted; returns once the kernel shows it queued.
    pub fn start() -> SilentListener {
        use socket2::{Domain, Socket, Type};
        let listener =
            Socket::new(Domain::IPV4, Type::STREAM, None).expect("create a listening socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("a literal socket address");
        listener.bind(&any.into()).expect("bind 127.0.0.1:0");
        listener.listen(0).expect("listen with a backlog of 0");
        let addr = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("the listener's address");
        let filler = TcpStream::connect(addr).expect("the one connection the queue holds");
        let unspecified: SocketAddr = "0.0.0.0:0".parse().expect("a literal socket address");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tcp_socket(addr, unspecified).map(|s| s.rx_queue) != Some(1) {
            assert!(Instant::now() < deadline, "the accept queue never filled");
            std::thread::sleep(Duration::from_millis(5));
        }
        SilentListener {
            addr,
            _listener: listener,
            _filler: filler,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// `0100007F:1F90` (address as the kernel's native-order u32, port in hex) to 127.0.0.1:8080.
fn parse_address(field: &str) -> Option<SocketAddrV4> {
    let (ip, port) = field.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

/// A TCP server on 127.0.0.1 that accepts one connection and echoes its bytes until the
/// client half-closes, then half-closes too. The thread ends with that connection.
pub fn tcp_echo() -> (SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
    let addr = listener.local_addr().expect("echo server address");
    let thread = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    });
    (addr, thread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn sees_an_established_connection_its_unread_bytes_and_the_peer_s_fin() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        assert_eq!(tcp_state(local, remote), Some(TCP_ESTABLISHED));
        (&server).write_all(b"abc").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while tcp_socket(local, remote).map(|s| s.rx_queue) != Some(3) {
            assert!(std::time::Instant::now() < deadline, "no bytes seen");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        server.shutdown(std::net::Shutdown::Both).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while tcp_state(local, remote) != Some(TCP_CLOSE_WAIT) {
            assert!(std::time::Instant::now() < deadline, "no FIN seen");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(client);
    }

    #[test]
    fn a_connect_to_the_silent_listener_times_out() {
        let silent = SilentListener::start();
        let err = TcpStream::connect_timeout(&silent.addr(), Duration::from_millis(200))
            .expect_err("the SYN is dropped, so the connect cannot complete");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    }
}
