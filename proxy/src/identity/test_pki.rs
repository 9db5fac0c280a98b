//! Certificate authorities and X.509-SVIDs made with rcgen for the identity tests, and an
//! in-memory handshake between a rustls client and server (no sockets).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{ClientConnection, ConnectionCommon, ServerConnection};
use std::path::PathBuf;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// (year, month, day).
pub type Day = (i32, u8, u8);

/// How a leaf is made.
pub struct Leaf<'a> {
    pub uris: Vec<&'a str>,
    pub is_ca: bool,
    /// First and last day; `None` keeps rcgen's (1975 to 4096).
    pub validity: Option<(Day, Day)>,
}

impl<'a> Leaf<'a> {
    pub fn svid(uri: &'a str) -> Leaf<'a> {
        Leaf {
            uris: vec![uri],
            is_ca: false,
            validity: None,
        }
    }
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = ok(KeyPair::generate());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = ok(params.self_signed(&key));
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn issue(&self, leaf: &Leaf<'_>) -> Issued {
        let key = ok(KeyPair::generate());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "workload");
        params.distinguished_name = dn;
        params.subject_alt_names = leaf
            .uris
            .iter()
            .map(|u| SanType::URI(ok((*u).try_into())))
            .collect();
        if leaf.is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        } else {
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
        if let Some(((y0, m0, d0), (y1, m1, d1))) = leaf.validity {
            params.not_before = rcgen::date_time_ymd(y0, m0, d0);
            params.not_after = rcgen::date_time_ymd(y1, m1, d1);
        }
        let cert = ok(params.signed_by(&key, &self.issuer));
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// An SVID for `uri`, valid for rcgen's default centuries.
    pub fn svid(&self, uri: &str) -> Issued {
        self.issue(&Leaf::svid(uri))
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "coremesh-identity-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        ok(std::fs::create_dir_all(&dir));
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Replaces `name` the way a renewal does: a new file renamed over the old one.
    pub fn replace(&self, name: &str, contents: &str) {
        let next = self.path(&format!(".{name}.next"));
        ok(std::fs::write(&next, contents));
        ok(std::fs::rename(&next, self.path(name)));
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which side of an in-memory handshake failed, and with what.
#[derive(Debug)]
pub enum HandshakeError {
    Client(rustls::Error),
    Server(rustls::Error),
}

fn pump<A, B>(from: &mut ConnectionCommon<A>, to: &mut ConnectionCommon<B>) {
    let mut bytes = Vec::new();
    while from.wants_write() {
        if from.write_tls(&mut bytes).is_err() {
            break;
        }
    }
    let mut rest: &[u8] = &bytes;
    while !rest.is_empty() {
        match to.read_tls(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Drives both ends until the handshake is done on both, or one end fails.
pub fn handshake(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> Result<(), HandshakeError> {
    for _ in 0..32 {
        pump(&mut *client, &mut *server);
        server
            .process_new_packets()
            .map_err(HandshakeError::Server)?;
        pump(&mut *server, &mut *client);
        client
            .process_new_packets()
            .map_err(HandshakeError::Client)?;
        if !client.is_handshaking() && !server.is_handshaking() {
            // The server checks the client's certificate on the client's last flight.
            pump(&mut *client, &mut *server);
            server
                .process_new_packets()
                .map_err(HandshakeError::Server)?;
            return Ok(());
        }
    }
    panic!("the in-memory handshake did not finish in 32 rounds");
}

/// Moves what the server has to send (after a failure: its alert) to the client.
pub fn send_alert(server: &mut ServerConnection, client: &mut ClientConnection) {
    pump(&mut *server, &mut *client);
}

/// Sends `data` from client to server over an established connection and returns what
/// the server read.
pub fn send(client: &mut ClientConnection, server: &mut ServerConnection, data: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    ok(client.writer().write_all(data));
    pump(&mut *client, &mut *server);
    ok(server.process_new_packets());
    let mut got = vec![0; data.len()];
    ok(server.reader().read_exact(&mut got));
    got
}
