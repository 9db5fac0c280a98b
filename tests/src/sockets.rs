//! The kernel's view of this machine's IPv4 TCP sockets (`/proc/net/tcp`), so that a test
//! can wait until a FIN or a reset has reached a socket instead of sleeping.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// `TCP_CLOSE_WAIT` in `/proc/net/tcp`: the peer sent its FIN, this side has not closed.
pub const TCP_CLOSE_WAIT: u8 = 0x08;
/// `TCP_ESTABLISHED` in `/proc/net/tcp`.
pub const TCP_ESTABLISHED: u8 = 0x01;

/// The state of the socket bound to `local` and connected to `remote` (IPv4 only), or
/// `None` when no such socket exists (closed, or never opened).
pub fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let l = parse_address(fields.next()?)?;
        let r = parse_address(fields.next()?)?;
        let state = u8::from_str_radix(fields.next()?, 16).ok()?;
        (SocketAddr::V4(l) == local && SocketAddr::V4(r) == remote).then_some(state)
    })
}

/// `0100007F:1F90` (address as the kernel's native-order u32, port in hex) to 127.0.0.1:8080.
fn parse_address(field: &str) -> Option<SocketAddrV4> {
    let (ip, port) = field.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn sees_an_established_connection_and_the_peer_s_fin() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        assert_eq!(tcp_state(local, remote), Some(TCP_ESTABLISHED));
        server.shutdown(std::net::Shutdown::Both).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while tcp_state(local, remote) != Some(TCP_CLOSE_WAIT) {
            assert!(std::time::Instant::now() < deadline, "no FIN seen");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(client);
    }
}
