//! The original destination of an intercepted connection: where the client meant to
//! connect before an iptables `REDIRECT` sent it to the proxy (`SO_ORIGINAL_DST` for IPv4
//! at `SOL_IP`, `IP6T_SO_ORIGINAL_DST` for IPv6 at `SOL_IPV6`, both read from the kernel's
//! connection tracking).
//!
//! A connection that was not redirected (made directly to the listener) has no original
//! destination: the kernel answers `ENOENT`, and the destination is then the socket's
//! local address, i.e. the listener itself. [`classify`] turns that into
//! [`Destination::Listener`], which the outbound side refuses (it would loop) and the
//! inbound side serves as if the client had connected to the application's port.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Where a connection was going, as the sides see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Redirected: the client meant to reach this address.
    Original(SocketAddr),
    /// Not redirected, or redirected to one of the proxy's own listeners: reaching it
    /// again through the proxy would loop.
    Listener(SocketAddr),
}

/// The original destination of `stream`, or its local address when it has none.
pub fn original_destination(stream: &impl AsRawFd) -> io::Result<SocketAddr> {
    // SAFETY: the descriptor belongs to `stream`, which the caller keeps open for the
    // whole of this call; the borrow does not outlive it.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let socket = socket2::SockRef::from(&fd);
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))?;
    let asked = match local {
        // An IPv4 client on an IPv6 socket has an IPv4-mapped local address; its
        // connection tracking entry is an IPv4 one.
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => socket.original_dst_ipv6(),
        _ => socket.original_dst(),
    };
    resolve(asked.map(|addr| addr.as_socket()), local)
}

/// The kernel's answer (`asked`) or the socket's `local` address. `ENOENT` (no connection
/// tracking entry: not redirected) and `ENOPROTOOPT` (no netfilter for this family) mean
/// the connection went straight to the listener; any other error is passed on.
pub fn resolve(asked: io::Result<Option<SocketAddr>>, local: SocketAddr) -> io::Result<SocketAddr> {
    match asked {
        Ok(Some(addr)) => Ok(unmap(addr)),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not an IP address",
        )),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ENOPROTOOPT)
            ) =>
        {
            Ok(unmap(local))
        }
        Err(e) => Err(e),
    }
}

/// `::ffff:a.b.c.d` as the IPv4 address it stands for, so that it matches a service's
/// IPv4 `addresses`.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Whether `destination` is one of the proxy's own `listeners`: equal to one, or on its
/// port when that listener is bound to an unspecified address (0.0.0.0 / ::) and the
/// destination is a local address of this host (loopback, or the connection's `local`
/// address, which is this host's).
pub fn classify(
    destination: SocketAddr,
    local: SocketAddr,
    listeners: &[SocketAddr],
) -> Destination {
    let destination = unmap(destination);
    let local = unmap(local);
    let ours = listeners.iter().any(|listener| {
        let listener = unmap(*listener);
        if listener.port() != destination.port() {
            return false;
        }
        listener.ip() == destination.ip()
            || (listener.ip().is_unspecified()
                && (destination.ip().is_loopback() || destination.ip() == local.ip()))
    });
    if ours {
        Destination::Listener(destination)
    } else {
        Destination::Original(destination)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn resolve_falls_back_to_the_local_address_only_when_not_redirected() {
        let local = addr("127.0.0.1:4140");
        let original = addr("10.96.0.10:80");
        assert_eq!(resolve(Ok(Some(original)), local).ok(), Some(original));
        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(resolve(Err(enoent), local).ok(), Some(local));
        let enoprotoopt = io::Error::from_raw_os_error(libc::ENOPROTOOPT);
        assert_eq!(resolve(Err(enoprotoopt), local).ok(), Some(local));
        let ebadf = io::Error::from_raw_os_error(libc::EBADF);
        assert_eq!(
            resolve(Err(ebadf), local).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EBADF))
        );
        assert!(resolve(Ok(None), local).is_err());
        let mapped = addr("[::ffff:10.96.0.10]:80");
        assert_eq!(resolve(Ok(Some(mapped)), local).ok(), Some(original));
        let v6 = addr("[fd00::10]:8080");
        assert_eq!(resolve(Ok(Some(v6)), local).ok(), Some(v6));
    }

    #[test]
    fn classify_recognises_the_proxys_own_listeners() {
        let outbound = addr("127.0.0.1:4140");
        let inbound = addr("0.0.0.0:4143");
        let listeners = [outbound, inbound];
        let local = addr("10.0.0.7:4143");
        let c = |dst: &str| classify(addr(dst), local, &listeners);
        assert_eq!(c("127.0.0.1:4140"), Destination::Listener(outbound));
        assert_eq!(
            c("10.0.0.7:4143"),
            Destination::Listener(addr("10.0.0.7:4143"))
        );
        assert_eq!(
            c("127.0.0.9:4143"),
            Destination::Listener(addr("127.0.0.9:4143"))
        );
        assert_eq!(
            c("[::ffff:127.0.0.1]:4140"),
            Destination::Listener(outbound)
        );
        assert_eq!(
            c("10.0.0.8:4143"),
            Destination::Original(addr("10.0.0.8:4143"))
        );
        assert_eq!(
            c("10.0.0.7:4140"),
            Destination::Original(addr("10.0.0.7:4140"))
        );
        assert_eq!(
            c("10.96.0.10:80"),
            Destination::Original(addr("10.96.0.10:80"))
        );
    }

    /// A connection made straight to a listener has no original destination: on both
    /// drivers' sockets the answer is the listener's own address.
    #[test]
    fn a_direct_connection_reports_the_listener() -> io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let at = listener.local_addr()?;
        let _client = std::net::TcpStream::connect(at)?;
        let (accepted, _) = listener.accept()?;
        let destination = original_destination(&accepted)?;
        assert_eq!(destination, at);
        assert_eq!(classify(destination, at, &[at]), Destination::Listener(at));
        Ok(())
    }
}
