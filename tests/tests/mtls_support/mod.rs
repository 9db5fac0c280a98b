//! What the mutual TLS suites share: certificate authorities issuing X.509-SVIDs (rcgen),
//! the identity files in a temporary directory, proxy B (an inbound side in front of the
//! application) and proxy A (a service reached over mutual TLS), readings of B's metrics,
//! and a TLS client as a peer proxy is one ([`TlsClient`]: rustls, presenting an SVID,
//! checking the server's chain against a CA, reading the server's certificate).

#![allow(dead_code)]

use coremesh_discovery::{
    Config, IdentitySettings, InboundPolicy, InboundSettings, ServiceTls, SideSettings,
};
use coremesh_tests::admin::{start_with_admin, AdminProxy};
use coremesh_tests::proxy::{base_config, route_all, service};
use coremesh_tests::Driver;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const WEB: &str = "spiffe://td/ns/prod/sa/web";
pub const APP: &str = "spiffe://td/ns/prod/sa/app";
pub const HEADER: &str = "x-coremesh-client-id";
/// Bound on every wait: only turns a hang into a failure.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A certificate authority that issues X.509-SVIDs.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
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

    /// (certificate, key) PEM of an SVID for `uri`.
    pub fn svid(&self, uri: &str) -> (String, String) {
        let svid = self.issue(uri);
        (svid.cert_pem, svid.key_pem)
    }

    /// (certificate, key) PEM of an SVID for `uri`, valid from 2000 until the first day of
    /// the year `until`.
    pub fn svid_until(&self, uri: &str, until: i32) -> (String, String) {
        let svid = self.issue_until(uri, Some(until));
        (svid.cert_pem, svid.key_pem)
    }

    /// An SVID for `uri`, in PEM and DER.
    pub fn issue(&self, uri: &str) -> Svid {
        self.issue_until(uri, None)
    }

    /// An SVID for `uri`, valid from 2000 until the first day of the year `until` when
    /// given (rcgen's default validity otherwise).
    fn issue_until(&self, uri: &str, until: Option<i32>) -> Svid {
        let key = ok(KeyPair::generate());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "workload");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(ok(uri.try_into()))];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if let Some(until) = until {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(until, 1, 1);
        }
        let cert = ok(params.signed_by(&key, &self.issuer));
        Svid {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// The CA's own certificate in DER.
    pub fn der(&self) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        ok(rustls::pki_types::CertificateDer::from_pem_slice(
            self.pem.as_bytes(),
        ))
        .to_vec()
    }
}

/// A certificate and its key.
pub struct Svid {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("coremesh-mtls-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ok(std::fs::create_dir_all(&dir));
        TempDir(dir)
    }

    /// `[identity]` over files written here: an SVID for `uri` from `issuer`, and the
    /// certificates of `anchors` as the trust anchors.
    pub fn identity(
        &self,
        name: &str,
        issuer: &Ca,
        uri: &str,
        anchors: &[&Ca],
    ) -> IdentitySettings {
        let bundle: String = anchors.iter().map(|ca| ca.pem.as_str()).collect();
        let (cert, key) = issuer.svid(uri);
        IdentitySettings {
            cert: self.write(&format!("{name}.pem"), &cert),
            key: self.write(&format!("{name}.key"), &key),
            trust_anchors: self.write(&format!("{name}-bundle.pem"), &bundle),
            ..IdentitySettings::default()
        }
    }

    /// `[identity]` over files written here: an SVID for `uri` from `ca` valid until the
    /// first day of the year `until`, and `ca` as the trust anchor.
    pub fn identity_until(&self, name: &str, ca: &Ca, uri: &str, until: i32) -> IdentitySettings {
        let (cert, key) = ca.svid_until(uri, until);
        IdentitySettings {
            cert: self.write(&format!("{name}.pem"), &cert),
            key: self.write(&format!("{name}.key"), &key),
            trust_anchors: self.write(&format!("{name}-bundle.pem"), &ca.pem),
            ..IdentitySettings::default()
        }
    }

    /// Writes `contents` to the file `name` here; its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        ok(std::fs::write(&path, contents));
        path
    }
}

impl TempDir {
    /// Replaces `path` the way a renewal does: a new file renamed over the old one.
    pub fn replace(&self, path: &std::path::Path, contents: &str) {
        let next = path.with_extension("next");
        ok(std::fs::write(&next, contents));
        ok(std::fs::rename(&next, path));
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Proxy B: `identity`, and an inbound side on an ephemeral loopback port in front of
/// the application on `app_port`.
pub fn proxy_b(
    driver: Driver,
    identity: IdentitySettings,
    app_port: u16,
    require_mtls: bool,
) -> AdminProxy {
    let policy = InboundPolicy {
        require_mtls,
        ..InboundPolicy::default()
    };
    proxy_b_with(driver, identity, app_port, policy)
}

/// [`proxy_b`] with the inbound side's whole policy.
pub fn proxy_b_with(
    driver: Driver,
    identity: IdentitySettings,
    app_port: u16,
    policy: InboundPolicy,
) -> AdminProxy {
    let mut config = base_config();
    config.identity = Some(identity);
    let inbound = InboundSettings {
        side: SideSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
            ..SideSettings::default()
        },
        app_port: Some(app_port),
        policy,
        ..InboundSettings::default()
    };
    config.inbound = Some(inbound);
    validated(&config);
    start_with_admin(driver, config)
}

/// Proxy A: `identity`, and every request to service "app" on `b_inbound`, reached over
/// mutual TLS expecting `expected` (one attempt, so refusals are counted once).
pub fn proxy_a(identity: IdentitySettings, b_inbound: SocketAddr, expected: &str) -> Config {
    let mut config = base_config();
    config.identity = Some(identity);
    let mut app = service("app", &[b_inbound]);
    app.tls = Some(ServiceTls {
        identity: expected.to_owned(),
    });
    app.overrides.max_attempts = Some(1);
    config.services.push(app);
    config.routes.push(route_all("app"));
    validated(&config);
    config
}

pub fn validated(config: &Config) {
    let violations = coremesh_discovery::validate(config);
    assert!(
        violations.is_empty(),
        "the test's configuration is invalid: {violations:?}"
    );
}

/// The value of the sample `series` (name and labels) in a Prometheus text scrape.
pub fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

pub fn inbound_failures(b: &AdminProxy, reason: &str) -> Option<u64> {
    sample(
        &b.metrics_text(),
        &format!(
            "coremesh_tls_handshake_failures_total{{direction=\"inbound\",reason=\"{reason}\"}}"
        ),
    )
}

/// Waits until B's metrics show `want` inbound refusals for `reason`; the last value seen.
pub fn wait_failures(b: &AdminProxy, reason: &str, want: u64) -> Option<u64> {
    let start = Instant::now();
    loop {
        let seen = inbound_failures(b, reason);
        if seen == Some(want) || start.elapsed() > WAIT {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn denials(b: &AdminProxy, reason: &str) -> u64 {
    sample(
        &b.metrics_text(),
        &format!("coremesh_inbound_denied_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0)
}

pub fn reloads_ok(b: &AdminProxy) -> u64 {
    sample(
        &b.metrics_text(),
        "coremesh_identity_reloads_total{result=\"ok\"}",
    )
    .unwrap_or(0)
}

/// Waits (every 20 ms, up to [`WAIT`]) until `done` holds; whether it did.
pub fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TLS 1.3 client as a peer proxy is one: it presents an SVID and checks the server's
/// chain against one CA, but not a name (an SVID carries a URI, no host name or address).
pub struct TlsClient {
    config: std::sync::Arc<rustls::ClientConfig>,
}

/// A TLS connection of a [`TlsClient`], its handshake done.
pub type TlsConn = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

impl TlsClient {
    /// Presenting `svid`, trusting `ca`, offering `alpn` (none: no ALPN extension).
    pub fn new(ca: &Ca, svid: &Svid, alpn: &[&[u8]]) -> TlsClient {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        ok(roots.add(CertificateDer::from(ca.der())));
        let webpki = ok(rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .build());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.key_der.clone()));
        let mut config = ok(ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13]))
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyName(webpki)))
        .with_client_auth_cert(vec![CertificateDer::from(svid.cert_der.clone())], key));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = rustls::client::Resumption::disabled();
        TlsClient {
            config: std::sync::Arc::new(config),
        }
    }

    /// Connect to `addr` and finish the handshake.
    pub fn connect(&self, addr: SocketAddr) -> Result<TlsConn, String> {
        let tcp = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(WAIT))
            .map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(WAIT))
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = rustls::ClientConnection::new(self.config.clone(), name)
            .map_err(|e| format!("client: {e}"))?;
        let mut conn = rustls::StreamOwned::new(tls, tcp);
        while conn.conn.is_handshaking() {
            conn.conn
                .complete_io(&mut conn.sock)
                .map_err(|e| format!("handshake: {e}"))?;
        }
        Ok(conn)
    }

    /// The certificate (DER) the server at `addr` presents in a new handshake.
    pub fn server_certificate(&self, addr: SocketAddr) -> Result<Vec<u8>, String> {
        let mut conn = self.connect(addr)?;
        let leaf = conn
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .ok_or("no server certificate")?;
        close(&mut conn);
        Ok(leaf)
    }
}

/// Send a close_notify and close the writing side (a half-close: reading goes on).
pub fn close(conn: &mut TlsConn) {
    use std::io::Write;
    conn.conn.send_close_notify();
    let _ = conn.flush();
    let _ = conn.sock.shutdown(std::net::Shutdown::Write);
}

/// How a TLS connection's reading ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsEnd {
    /// The peer's close_notify.
    CloseNotify,
    /// The socket closed (or failed) without one.
    Unclean(String),
}

/// Read until the connection ends: the bytes, and how it ended.
pub fn read_to_end(conn: &mut TlsConn) -> (Vec<u8>, TlsEnd) {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return (out, TlsEnd::CloseNotify),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (out, TlsEnd::Unclean(e.to_string())),
        }
    }
}

/// Read until `want` bytes came (or the connection ended first: fewer).
pub fn read_exact_or_end(conn: &mut TlsConn, want: usize) -> Vec<u8> {
    use std::io::Read;
    let mut out = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match conn.read(&mut out[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out.truncate(got);
    out
}

/// rustls' WebPKI chain check without the name check.
#[derive(Debug)]
struct AnyName(std::sync::Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        // The chain is checked first; only the name may fail after it.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
