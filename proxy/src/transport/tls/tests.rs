//! TLS on real sockets (127.0.0.1), on both monoio drivers: HTTP/1 and HTTP/2 through the
//! connection stream, ALPN, the peer's identity reaching the request path, and each kind
//! of bad input refused and counted by reason.

use crate::http1::server::{client_id_header, ClientId};
use crate::pipeline::{Origin, Target};
use crate::sidecar::tls::{accept, plaintext_refusal, InboundTls};
use crate::sidecar::Direction;
use crate::transport::conn::{Conn, Fill};
use crate::transport::detect::{detect, DetectConfig, Protocol};
use crate::transport::tls_stats::{FailReason, TlsStats};
use crate::transport::tls_upstream::{self, Alpn, UpstreamTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

const CLIENT_ID: &str = "spiffe://td.test/ns/prod/sa/web";
const SERVER_ID: &str = "spiffe://td.test/ns/prod/sa/api";
const SERVER_NAME: &str = "api.test";

fn on_each_driver<F: Future<Output = ()>>(body: impl Fn() -> F) {
    if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
    {
        rt.block_on(body());
    }
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("legacy runtime")
        .block_on(body());
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and a leaf it signed.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
    /// The leaf certificate and its key, PEM (for openssl).
    pem: (String, String),
}

impl Leaf {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

struct Ca {
    cert: CertificateDer<'static>,
    pem: String,
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Names of their own: openssl takes a leaf named as its issuer for self-signed.
        let ca_name = format!("coremesh test CA {}", rand::random::<u32>());
        params.distinguished_name.push(DnType::CommonName, ca_name);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA");
        let pem = cert.pem();
        let cert = cert.der().clone();
        Ca {
            cert,
            pem,
            params,
            key,
        }
    }

    /// A leaf with the URI SAN `uri` (and the DNS name the server is reached by).
    fn leaf(&self, uri: &str) -> Leaf {
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("params");
        let uri = uri.to_string().try_into().expect("uri");
        params.subject_alt_names.push(SanType::URI(uri));
        params
            .distinguished_name
            .push(DnType::CommonName, "coremesh test leaf");
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::new(self.params.clone(), &self.key);
        let cert = params.signed_by(&key, &issuer).expect("leaf");
        Leaf {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key: key.serialize_der(),
            pem: (cert.pem(), key.serialize_pem()),
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).expect("root");
        roots
    }

    /// TLS 1.3 only, a client certificate from this CA required.
    fn server_config(&self, leaf: &Leaf) -> Arc<rustls::ServerConfig> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots().into(),
            provider(),
        )
        .build()
        .expect("verifier");
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(leaf.chain.clone(), leaf.key())
            .expect("server config");
        Arc::new(config)
    }

    /// Trusting this CA, presenting `leaf` (or no certificate).
    fn client_config(&self, leaf: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(self.roots());
        let mut config = match leaf {
            Some(leaf) => builder
                .with_client_auth_cert(leaf.chain.clone(), leaf.key())
                .expect("client config"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

struct Pki {
    ca: Ca,
    server: Leaf,
    client: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new();
        let server = ca.leaf(SERVER_ID);
        let client = ca.leaf(CLIENT_ID);
        Pki { ca, server, client }
    }

    fn inbound(&self) -> InboundTls {
        InboundTls::new(self.ca.server_config(&self.server), true)
    }
}

/// Accept one connection, detect it, and terminate TLS as the inbound side does.
async fn serve_one(
    listener: &monoio::net::TcpListener,
    tls: &InboundTls,
    stats: &TlsStats,
) -> Result<Conn, FailReason> {
    let (tcp, peer) = listener.accept().await.expect("accept");
    let mut conn = Conn::new(tcp, Vec::new());
    let detection = detect(&mut conn, 80, &DetectConfig::default()).await;
    if detection.protocol != Protocol::Tls {
        let reason = plaintext_refusal(detection.reason);
        crate::sidecar::tls::refuse(stats, reason, peer, &"TLS is required");
        return Err(reason);
    }
    accept(conn, tls, stats, peer).await
}

fn listen() -> (monoio::net::TcpListener, SocketAddr) {
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

fn inbound_origin(to: SocketAddr) -> Origin {
    Origin {
        direction: Direction::Inbound,
        target: Target::Application(to),
    }
}

#[test]
fn http1_over_tls_1_3_reaches_the_request_path_with_the_client_identity() {
    let pki = Pki::new();
    on_each_driver(|| async {
        let (listener, addr) = listen();
        let config = pki.ca.client_config(Some(&pki.client), &[b"http/1.1"]);
        let client = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
            let tcp = std::net::TcpStream::connect(addr)?;
            let name = ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
            let conn =
                rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nx-coremesh-client-id: forged\r\n\r\n")?;
            let mut out = Vec::new();
            tls.read_to_end(&mut out)?;
            Ok(out)
        });
        let stats = TlsStats::default();
        let mut conn = serve_one(&listener, &pki.inbound(), &stats)
            .await
            .expect("handshake");
        let tls = conn.stream.tls().expect("TLS");
        assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(
            tls.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(tls.identity(), Some(CLIENT_ID));
        assert_eq!(
            client_id_header(&conn.stream, inbound_origin(addr)),
            ClientId::Set(CLIENT_ID.into())
        );
        while !conn.data().windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(matches!(conn.fill(4096).await, Ok(Fill::Read(_))));
        }
        assert!(conn.data().starts_with(b"GET /x HTTP/1.1\r\n"));
        let n = conn.buffered();
        conn.consume(n);
        let (res, _) = conn
            .write_vec(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec())
            .await;
        res.expect("write");
        conn.stream.shutdown().await.expect("close_notify");
        while !client.is_finished() {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        let answer = client.join().expect("client thread").expect("client");
        assert_eq!(answer, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(
            stats.handshakes.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert!(FailReason::ALL.iter().all(|r| stats.failures(*r) == 0));
    });
}

#[test]
fn http2_over_tls_with_alpn_both_ends_through_the_adapters() {
    let pki = Pki::new();
    on_each_driver(|| async {
        let (listener, addr) = listen();
        let inbound = pki.inbound();
        let server = monoio::spawn(async move {
            let stats = TlsStats::default();
            let conn = serve_one(&listener, &inbound, &stats)
                .await
                .expect("handshake");
            assert_eq!(
                conn.stream.tls().and_then(|t| t.alpn_protocol()),
                Some(&b"h2"[..])
            );
            let client_id = client_id_header(&conn.stream, inbound_origin(addr));
            let read_ahead = conn.data().to_vec();
            let io = crate::http2::io::H2Io::new(conn.stream, read_ahead, Default::default())
                .expect("poll io");
            let mut h2 = h2::server::handshake(io).await.expect("h2 handshake");
            let (mut request, mut respond) = h2.accept().await.expect("a stream").expect("ok");
            client_id.apply(request.headers_mut());
            let seen = request.headers().get_all("x-coremesh-client-id");
            let seen: Vec<_> = seen.iter().map(|v| v.as_bytes().to_vec()).collect();
            let response = http::Response::builder()
                .status(200)
                .header("seen-id", seen.join(&b","[..]))
                .body(())
                .expect("response");
            respond.send_response(response, true).expect("respond");
            // Drive the connection until the client goes.
            while let Some(Ok(_)) = h2.accept().await {}
        });
        let tcp = monoio::net::TcpStream::connect(addr)
            .await
            .expect("connect");
        let upstream = UpstreamTls::new(
            pki.ca.client_config(Some(&pki.client), &[]),
            ServerName::try_from(SERVER_NAME).expect("name"),
            Some(SERVER_ID.to_string()),
            Arc::default(),
        );
        let stream = tls_upstream::handshake(tcp, &upstream, Alpn::H2)
            .await
            .expect("client handshake");
        assert_eq!(upstream.stats().handshakes.load(Relaxed), 1);
        assert!(FailReason::ALL
            .iter()
            .all(|r| upstream.stats().failures(*r) == 0));
        assert_eq!(stream.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(stream.identity(), Some(SERVER_ID));
        let io = crate::http2::io::H2Io::new(stream, Vec::new(), Default::default()).expect("io");
        let (sender, connection) = h2::client::handshake(io).await.expect("h2 client");
        monoio::spawn(async move {
            let _ = connection.await;
        });
        let mut sender = sender.ready().await.expect("ready");
        let request = http::Request::builder()
            .uri("https://api.test/x")
            .header("x-coremesh-client-id", "forged")
            .body(())
            .expect("request");
        let (response, _) = sender.send_request(request, true).expect("send");
        let response = response.await.expect("response");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("seen-id").map(|v| v.as_bytes()),
            Some(CLIENT_ID.as_bytes())
        );
        drop(sender);
        drop(response);
        server.await;
    });
}

#[test]
fn an_upstream_with_another_identity_is_refused() {
    let pki = Pki::new();
    on_each_driver(|| async {
        let (listener, addr) = listen();
        let inbound = pki.inbound();
        let server = monoio::spawn(async move {
            let stats = TlsStats::default();
            let _ = serve_one(&listener, &inbound, &stats).await;
        });
        let tcp = monoio::net::TcpStream::connect(addr)
            .await
            .expect("connect");
        let upstream = UpstreamTls::new(
            pki.ca.client_config(Some(&pki.client), &[]),
            ServerName::try_from(SERVER_NAME).expect("name"),
            Some("spiffe://td.test/ns/prod/sa/other".to_string()),
            Arc::default(),
        );
        let err = tls_upstream::handshake(tcp, &upstream, Alpn::Http1)
            .await
            .err()
            .expect("refused");
        assert_eq!(FailReason::of(&err), FailReason::BadCertificate);
        // Counted on the endpoint's own stats: once, under that reason.
        assert_eq!(upstream.stats().handshakes.load(Relaxed), 0);
        for reason in FailReason::ALL {
            let want = u64::from(reason == FailReason::BadCertificate);
            assert_eq!(upstream.stats().failures(reason), want, "{reason:?}");
        }
        server.await;
    });
}

/// What a bad client does on its socket.
enum Bad {
    /// The start of a hello, then nothing (the socket stays open).
    Stall,
    /// A record header and handshake type, then garbage.
    Garbage,
    /// The start of a hello, then the write side closed.
    Truncated,
    /// Plain HTTP to a listener that requires TLS.
    Plaintext,
    /// A TLS client with no certificate, or one from an unknown CA.
    NoCertificate,
    UnknownCa,
}

#[test]
fn bad_input_is_refused_and_counted_by_reason_while_a_good_client_is_served() {
    let pki = Pki::new();
    let other_ca = Ca::new();
    let stranger = other_ca.leaf(CLIENT_ID);
    let cases = [
        (Bad::Stall, FailReason::Timeout),
        (Bad::Garbage, FailReason::Protocol),
        (Bad::Truncated, FailReason::Closed),
        (Bad::Plaintext, FailReason::Plaintext),
        (Bad::NoCertificate, FailReason::NoCertificate),
        (Bad::UnknownCa, FailReason::BadCertificate),
    ];
    on_each_driver(|| async {
        let mut inbound = pki.inbound();
        inbound.handshake_timeout = Duration::from_millis(300);
        let stats = TlsStats::default();
        for (bad, reason) in &cases {
            let (listener, addr) = listen();
            let no_cert = pki.ca.client_config(None, &[]);
            let unknown = pki.ca.client_config(Some(&stranger), &[]);
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let hello = [
                0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
            ];
            let client = match bad {
                Bad::Stall => bad_client(addr, hello.to_vec(), Some(done_rx)),
                Bad::Garbage => {
                    let mut b = vec![0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04];
                    b.extend([0xff; 4]);
                    bad_client(addr, b, Some(done_rx))
                }
                Bad::Truncated => bad_client(addr, hello.to_vec(), None),
                Bad::Plaintext => {
                    bad_client(addr, b"GET / HTTP/1.1\r\n\r\n".to_vec(), Some(done_rx))
                }
                Bad::NoCertificate => tls_client(addr, no_cert),
                Bad::UnknownCa => tls_client(addr, unknown),
            };
            // A good client while the bad one is being refused.
            let refused = monoio::spawn({
                let inbound = inbound.clone();
                async move {
                    let stats = TlsStats::default();
                    let r = serve_one(&listener, &inbound, &stats).await.err();
                    (r, stats.failures(r.unwrap_or(FailReason::Other)))
                }
            });
            let (good_listener, good_addr) = listen();
            let good = tls_client(good_addr, pki.ca.client_config(Some(&pki.client), &[]));
            let conn = serve_one(&good_listener, &pki.inbound(), &stats)
                .await
                .expect("the good client is served");
            assert_eq!(
                conn.stream.tls().and_then(|t| t.identity()),
                Some(CLIENT_ID)
            );
            drop(conn);
            let (got, counted) = refused.await;
            assert_eq!(got, Some(*reason));
            assert_eq!(counted, 1, "{reason:?} counted once");
            let _ = done_tx.send(());
            // The threads end once this runtime has closed the sockets.
            join(client).await;
            join(good).await;
        }
        assert_eq!(
            stats.handshakes.load(std::sync::atomic::Ordering::Relaxed),
            cases.len() as u64
        );
    });
}

/// Wait for a client thread while this runtime goes on (closing sockets, for one).
async fn join(thread: std::thread::JoinHandle<()>) {
    while !thread.is_finished() {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = thread.join();
}

/// Writes `bytes`, then waits for `hold` (keeping the socket open) or closes its write side.
fn bad_client(
    addr: SocketAddr,
    bytes: Vec<u8>,
    hold: Option<std::sync::mpsc::Receiver<()>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
            return;
        };
        let _ = tcp.write_all(&bytes);
        match hold {
            Some(hold) => {
                let _ = hold.recv_timeout(Duration::from_secs(60));
            }
            None => {
                let _ = tcp.shutdown(std::net::Shutdown::Write);
                let _ = tcp.read_to_end(&mut Vec::new());
            }
        }
    })
}

/// A TLS client that handshakes (or fails to) and closes.
fn tls_client(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(tcp) = std::net::TcpStream::connect(addr) else {
            return;
        };
        let Ok(name) = ServerName::try_from(SERVER_NAME) else {
            return;
        };
        let Ok(conn) = rustls::ClientConnection::new(config, name) else {
            return;
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // TLS 1.3: the server's verdict on the client certificate comes after the
        // client's own handshake ends, so read until the server closes.
        let _ = tls.write_all(b"x");
        let _ = tls.read_to_end(&mut Vec::new());
    })
}

#[test]
fn the_identity_is_the_single_uri_san() {
    let ca = Ca::new();
    let leaf = ca.leaf(CLIENT_ID);
    assert_eq!(
        super::client_identity(&leaf.chain),
        Some(CLIENT_ID.to_string())
    );
    assert_eq!(super::client_identity(&[]), None);
    assert_eq!(
        super::client_identity(&[CertificateDer::from(vec![1, 2, 3])]),
        None
    );
    assert_eq!(super::client_identity(std::slice::from_ref(&ca.cert)), None);
}

/// `openssl s_client` against the inbound termination: TLS 1.3, the client certificate
/// required (refused without one, counted), the identity read from the one it sends.
#[test]
fn openssl_s_client_sees_tls_1_3_and_a_required_client_certificate() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("openssl is not installed: skipped");
        return;
    }
    let pki = Pki::new();
    let dir = std::env::temp_dir().join(format!("coremesh-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let files = [
        ("ca.pem", pki.ca.pem.as_str()),
        ("cert.pem", pki.client.pem.0.as_str()),
        ("key.pem", pki.client.pem.1.as_str()),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write");
    }
    on_each_driver(|| async {
        for with_cert in [true, false] {
            let (listener, addr) = listen();
            let mut args = vec![
                "s_client".to_string(),
                "-connect".to_string(),
                addr.to_string(),
                "-tls1_3".to_string(),
                "-servername".to_string(),
                SERVER_NAME.to_string(),
                "-CAfile".to_string(),
                dir.join("ca.pem").display().to_string(),
                "-verify_return_error".to_string(),
            ];
            if with_cert {
                for (flag, file) in [("-cert", "cert.pem"), ("-key", "key.pem")] {
                    args.push(flag.to_string());
                    args.push(dir.join(file).display().to_string());
                }
            }
            let client = std::thread::spawn(move || {
                std::process::Command::new("openssl")
                    .args(&args)
                    .stdin(std::process::Stdio::null())
                    .output()
            });
            let stats = TlsStats::default();
            let served = serve_one(&listener, &pki.inbound(), &stats).await;
            match &served {
                Ok(conn) => {
                    assert!(with_cert);
                    let tls = conn.stream.tls().expect("TLS");
                    assert_eq!(tls.identity(), Some(CLIENT_ID));
                }
                Err(reason) => {
                    if with_cert {
                        while !client.is_finished() {
                            monoio::time::sleep(Duration::from_millis(5)).await;
                        }
                        let out = client.join().expect("thread").expect("openssl ran");
                        panic!(
                            "refused: {reason:?}\n{}\n{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    assert_eq!(*reason, FailReason::NoCertificate);
                    assert_eq!(stats.failures(FailReason::NoCertificate), 1);
                }
            }
            drop(served);
            while !client.is_finished() {
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
            let out = client.join().expect("thread").expect("openssl ran");
            let text = String::from_utf8_lossy(&out.stdout);
            if with_cert {
                assert!(text.contains("TLSv1.3"), "{text}");
                // The server asked for a client certificate.
                assert!(
                    text.contains("Acceptable client certificate CA names")
                        || text.contains("Requested Signature Algorithms"),
                    "{text}"
                );
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bodies of many records each way: reads stop at what rustls may hold, writes go out in
/// as many records as they need, and no byte is lost or reordered.
#[test]
fn large_transfers_both_ways_arrive_whole() {
    let pki = Pki::new();
    let up: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let down: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    on_each_driver(|| async {
        let (listener, addr) = listen();
        let config = pki.ca.client_config(Some(&pki.client), &[]);
        let (sent, expected) = (up.clone(), down.len());
        let client = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
            let tcp = std::net::TcpStream::connect(addr)?;
            let name = ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
            let conn =
                rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(&sent)?;
            tls.flush()?;
            let mut got = vec![0u8; expected];
            tls.read_exact(&mut got)?;
            Ok(got)
        });
        let stats = TlsStats::default();
        let mut conn = serve_one(&listener, &pki.inbound(), &stats)
            .await
            .expect("handshake");
        let mut received = Vec::new();
        while received.len() < up.len() {
            match conn.fill(16 * 1024).await {
                Ok(Fill::Read(_)) => {}
                other => panic!("{other:?} after {} bytes", received.len()),
            }
            received.extend_from_slice(conn.data());
            let n = conn.buffered();
            conn.consume(n);
        }
        assert!(received == up, "the upload arrived changed");
        let (res, _) = conn.write_vec(down.clone()).await;
        res.expect("write");
        while !client.is_finished() {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        let got = client.join().expect("thread").expect("client");
        assert!(got == down, "the download arrived changed");
        assert_eq!(conn.bytes_in, up.len() as u64);
        assert_eq!(conn.bytes_out, down.len() as u64);
    });
}

/// A plain TCP application for tunnel tests: reads until the end of stream, then answers
/// `got N;` and the bytes back, and closes (what reaches the client after its own
/// half-close proves the other way stayed open).
fn answer_after_eof() -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).expect("read");
        tcp.write_all(format!("got {};", got.len()).as_bytes())
            .expect("write");
        tcp.write_all(&got).expect("write");
        got
    });
    (addr, app)
}

/// A TLS client side tunnelled to a plain one (an upgrade on an inbound TLS connection):
/// the client's bytes (some already buffered when the tunnel starts) reach the application,
/// its close_notify and FIN reach it as the end of stream while the other way stays open,
/// and the application's close reaches the client as a close_notify.
#[test]
fn a_tunnel_from_a_tls_client_relays_both_ways_with_half_close_and_close_notify() {
    let pki = Pki::new();
    let upload: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
    on_each_driver(|| async {
        let (listener, addr) = listen();
        let (app_addr, app) = answer_after_eof();
        let config = pki.ca.client_config(Some(&pki.client), &[]);
        let sent = upload.clone();
        let client = std::thread::spawn(move || -> std::io::Result<(Vec<u8>, bool)> {
            let tcp = std::net::TcpStream::connect(addr)?;
            tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
            let name = ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
            let conn =
                rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(b"first;")?;
            tls.flush()?;
            // Wait for the go-ahead: the server buffered "first;" before the tunnel.
            let mut go = [0u8; 3];
            tls.read_exact(&mut go)?;
            tls.write_all(&sent)?;
            tls.conn.send_close_notify();
            tls.flush()?;
            tls.sock.shutdown(std::net::Shutdown::Write)?;
            let mut got = Vec::new();
            // Ok only when the stream ended with a close_notify.
            let clean = tls.read_to_end(&mut got).is_ok();
            Ok((got, clean))
        });
        let stats = TlsStats::default();
        let mut conn = serve_one(&listener, &pki.inbound(), &stats)
            .await
            .expect("handshake");
        while conn.buffered() < b"first;".len() {
            assert!(matches!(conn.fill(4096).await, Ok(Fill::Read(_))));
        }
        let (res, _) = conn.write_vec(b"go;".to_vec()).await;
        res.expect("write");
        let upstream = monoio::net::TcpStream::connect(app_addr)
            .await
            .expect("connect");
        let end = crate::http1::tunnel::splice(
            conn,
            Conn::new(upstream, Vec::new()),
            Duration::from_secs(30),
            16 * 1024,
        )
        .await;
        while !client.is_finished() || !app.is_finished() {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        let expected_up: Vec<u8> = [b"first;".as_slice(), &upload].concat();
        let got_by_app = app.join().expect("application thread");
        assert!(got_by_app == expected_up, "the application got other bytes");
        let answer: Vec<u8> = [
            format!("got {};", expected_up.len()).as_bytes(),
            &expected_up,
        ]
        .concat();
        let (got, clean) = client.join().expect("client thread").expect("client");
        assert!(got == answer, "the client got another answer");
        assert!(
            clean,
            "the tunnel's end reached the client without a close_notify"
        );
        assert_eq!(end.to_upstream, expected_up.len() as u64);
        assert_eq!(end.carried_to_upstream, b"first;".len() as u64);
        assert_eq!(end.to_client, answer.len() as u64);
        assert_eq!(end.carried_to_client, 0);
        assert!(!end.idle_closed);
    });
}

/// An outbound opaque connection to a meshed endpoint offers no ALPN protocol, so the
/// inbound side reads its decrypted bytes: opaque bytes are opaque, an HTTP/1 request line
/// (from a TLS client that offers no ALPN) is HTTP/1, and a TLS record inside TLS is not
/// taken for a ClientHello to terminate again.
#[test]
fn an_opaque_connection_offers_no_alpn_and_its_decrypted_bytes_decide() {
    use crate::sidecar::tls::detect_decrypted;
    use crate::transport::detect::DetectReason;
    let pki = Pki::new();
    on_each_driver(|| async {
        let cases: [(&[u8], Protocol, DetectReason); 3] = [
            (
                b"\x00\x01binary",
                Protocol::Opaque,
                DetectReason::Unrecognised,
            ),
            (
                b"GET / HTTP/1.1\r\n",
                Protocol::Http1,
                DetectReason::Matched,
            ),
            (
                b"\x16\x03\x01\x00\x10\x01",
                Protocol::Opaque,
                DetectReason::Unrecognised,
            ),
        ];
        for (first, protocol, reason) in cases {
            let (listener, addr) = listen();
            let inbound = pki.inbound();
            let server = monoio::spawn(async move {
                let stats = TlsStats::default();
                let mut conn = serve_one(&listener, &inbound, &stats)
                    .await
                    .expect("handshake");
                let alpn = conn
                    .stream
                    .tls()
                    .and_then(|t| t.alpn_protocol().map(<[u8]>::to_vec));
                let detection = detect_decrypted(&mut conn, 9000, &DetectConfig::default()).await;
                (alpn, detection, conn.data().to_vec())
            });
            let tcp = monoio::net::TcpStream::connect(addr)
                .await
                .expect("connect");
            let upstream = UpstreamTls::new(
                pki.ca.client_config(Some(&pki.client), &[b"h2"]),
                ServerName::try_from(SERVER_NAME).expect("name"),
                Some(SERVER_ID.to_string()),
                Arc::default(),
            );
            let tls = tls_upstream::handshake(tcp, &upstream, Alpn::Opaque)
                .await
                .expect("handshake");
            let mut client = Conn::new(tls, Vec::new());
            let (res, _) = client.write_vec(first.to_vec()).await;
            res.expect("write");
            let (alpn, detection, data) = server.await;
            assert_eq!(alpn, None);
            assert_eq!(detection.protocol, protocol, "{first:?}");
            assert_eq!(detection.reason, reason, "{first:?}");
            assert_eq!(data, first, "detection consumed nothing");
        }
    });
}

/// A tunnel with a TLS side that carries nothing either way for its idle timeout is
/// closed on both sides.
#[test]
fn an_idle_tunnel_with_a_tls_side_is_closed() {
    let pki = Pki::new();
    on_each_driver(|| async {
        let (listener, addr) = listen();
        let plain = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let plain_addr = plain.local_addr().expect("addr");
        let config = pki.ca.client_config(Some(&pki.client), &[]);
        let client = std::thread::spawn(move || -> std::io::Result<usize> {
            let tcp = std::net::TcpStream::connect(addr)?;
            tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
            let name = ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
            let conn =
                rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(b"x")?;
            // Nothing more: the tunnel's idle timeout ends it.
            let mut got = Vec::new();
            let _ = tls.read_to_end(&mut got);
            Ok(got.len())
        });
        let app = std::thread::spawn(move || -> std::io::Result<usize> {
            let (mut tcp, _) = plain.accept()?;
            tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut got = Vec::new();
            tcp.read_to_end(&mut got)?;
            Ok(got.len())
        });
        let stats = TlsStats::default();
        let conn = serve_one(&listener, &pki.inbound(), &stats)
            .await
            .expect("handshake");
        let upstream = monoio::net::TcpStream::connect(plain_addr)
            .await
            .expect("connect");
        let end = crate::http1::tunnel::splice(
            conn,
            Conn::new(upstream, Vec::new()),
            Duration::from_millis(200),
            16 * 1024,
        )
        .await;
        while !client.is_finished() || !app.is_finished() {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(end.idle_closed);
        assert_eq!(end.to_upstream, 1);
        assert_eq!(app.join().expect("app thread").expect("app"), 1);
        assert_eq!(client.join().expect("client thread").expect("client"), 0);
    });
}
