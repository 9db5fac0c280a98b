//! The identity module against certificates made by rcgen: the SVID rules at load time,
//! in-memory handshakes between a client and a server configuration (each refusal with its
//! exact reason), and rotation.

use super::test_pki::{handshake, send, send_alert, Ca, HandshakeError, Issued, Leaf, TempDir};
use super::*;
use coremesh_discovery::{IdentitySettings, SpiffeId};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, ServerConnection};
use std::sync::Arc;
use std::time::Duration;

const API: &str = "spiffe://td.test/ns/prod/sa/api";
const WEB: &str = "spiffe://td.test/ns/prod/sa/web";

fn now() -> UnixTime {
    UnixTime::now()
}

fn files(issued: &Issued, ca: &Ca) -> PemFiles {
    PemFiles {
        cert: issued.cert.clone().into_bytes(),
        key: issued.key.clone().into_bytes(),
        trust_anchors: ca.pem.clone().into_bytes(),
    }
}

fn identity(issued: &Issued, ca: &Ca) -> Identity {
    Identity::from_pem(&files(issued, ca), now()).unwrap_or_else(|e| panic!("{e}"))
}

fn refusal(files: &PemFiles, at: UnixTime) -> IdentityError {
    match Identity::from_pem(files, at) {
        Ok(identity) => panic!("accepted {:?}", identity.id),
        Err(e) => e,
    }
}

fn configs(identity: Identity) -> TlsConfigs {
    TlsConfigs::new(IdentityStore::new(identity))
}

fn connect(
    client: &TlsConfigs,
    expected: &str,
    server: &TlsConfigs,
) -> Result<(ClientConnection, ServerConnection), HandshakeError> {
    let config = client
        .client_config(expected)
        .unwrap_or_else(|e| panic!("{e}"));
    connect_with(config, server.server_config())
}

fn connect_with(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
) -> Result<(ClientConnection, ServerConnection), HandshakeError> {
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut c = ClientConnection::new(client, name).unwrap_or_else(|e| panic!("{e}"));
    let mut s = ServerConnection::new(server).unwrap_or_else(|e| panic!("{e}"));
    handshake(&mut c, &mut s)?;
    Ok((c, s))
}

fn client_failure(result: Result<(ClientConnection, ServerConnection), HandshakeError>) -> Reason {
    match result {
        Err(HandshakeError::Client(e)) => Reason::of_tls_error(&e),
        Err(HandshakeError::Server(e)) => panic!("the server failed first: {e}"),
        Ok(_) => panic!("the handshake succeeded"),
    }
}

fn server_failure(result: Result<(ClientConnection, ServerConnection), HandshakeError>) -> Reason {
    match result {
        Err(HandshakeError::Server(e)) => Reason::of_tls_error(&e),
        Err(HandshakeError::Client(e)) => panic!("the client failed first: {e}"),
        Ok(_) => panic!("the handshake succeeded"),
    }
}

fn id(text: &str) -> SpiffeId {
    SpiffeId::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

fn leaf_der(issued: &Issued) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(issued.cert.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_good_svid_gives_mutual_tls_1_3_with_alpn_and_both_identities() {
    let ca = Ca::new("mesh ca");
    let server = configs(identity(&ca.svid(API), &ca));
    let client = configs(identity(&ca.svid(WEB), &ca));
    assert_eq!(server.store().current().id, id(API));
    let (c, s) = connect(&client, API, &server).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(s.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(peer_id(s.peer_certificates()), Ok(id(WEB)));
    assert_eq!(peer_id(c.peer_certificates()), Ok(id(API)));
}

#[test]
fn a_client_offering_only_http1_gets_http1() {
    let ca = Ca::new("mesh ca");
    let server = configs(identity(&ca.svid(API), &ca));
    let client = configs(identity(&ca.svid(WEB), &ca));
    let mut config = (*client.client_config(API).unwrap_or_else(|e| panic!("{e}"))).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (_, s) =
        connect_with(Arc::new(config), server.server_config()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(s.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[test]
fn two_uri_sans_are_refused_as_bad_svid() {
    let ca = Ca::new("mesh ca");
    let two = ca.issue(&Leaf {
        uris: vec![API, WEB],
        is_ca: false,
        validity: None,
    });
    let e = refusal(&files(&two, &ca), now());
    assert_eq!(e.reason, Reason::BadSvid, "{e}");
    assert!(e.detail.contains("2 URI SANs"), "{e}");
    let none = ca.issue(&Leaf {
        uris: vec![],
        is_ca: false,
        validity: None,
    });
    assert_eq!(refusal(&files(&none, &ca), now()).reason, Reason::BadSvid);
    let not_spiffe = ca.svid("https://td.test/ns/prod/sa/api");
    assert_eq!(
        refusal(&files(&not_spiffe, &ca), now()).reason,
        Reason::BadSvid
    );
    let no_path = ca.svid("spiffe://td.test");
    assert_eq!(
        refusal(&files(&no_path, &ca), now()).reason,
        Reason::BadSvid
    );
    assert_eq!(
        check_leaf(&leaf_der(&two), unix_seconds(now())).map_err(|e| e.reason),
        Err(Reason::BadSvid)
    );
    assert_eq!(peer_id(Some(&[leaf_der(&two)])), Err(Reason::BadSvid));
    assert_eq!(peer_id(Some(&[])), Err(Reason::NoClientCert));
    assert_eq!(peer_id(None), Err(Reason::NoClientCert));
}

fn key_der(issued: &Issued) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Peers that do not load their certificates through `Identity` (so nothing refused them
/// before): the verifiers refuse a leaf with two URI SANs in the handshake.
#[test]
fn a_peer_breaking_the_svid_rules_is_refused_in_the_handshake() {
    let ca = Ca::new("mesh ca");
    let two = ca.issue(&Leaf {
        uris: vec![API, WEB],
        is_ca: false,
        validity: None,
    });
    let ours = configs(identity(&ca.svid(API), &ca));
    // A server presenting it to our client.
    let rogue_server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| panic!("{e}"))
        .with_no_client_auth()
        .with_single_cert(vec![leaf_der(&two)], key_der(&two))
        .unwrap_or_else(|e| panic!("{e}"));
    let client = ours.client_config(API).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        client_failure(connect_with(client, Arc::new(rogue_server))),
        Reason::BadSvid
    );
    // A client presenting it to our server (it trusts our server to get that far).
    let verifier = super::verify_server::SpiffeServerVerifier::new(ours.store().clone(), id(API));
    let rogue_client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| panic!("{e}"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![leaf_der(&two)], key_der(&two))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        server_failure(connect_with(Arc::new(rogue_client), ours.server_config())),
        Reason::BadSvid
    );
}

#[test]
fn a_ca_as_leaf_is_refused_as_bad_svid() {
    let ca = Ca::new("mesh ca");
    let ca_leaf = ca.issue(&Leaf {
        uris: vec![API],
        is_ca: true,
        validity: None,
    });
    let e = refusal(&files(&ca_leaf, &ca), now());
    assert_eq!(e.reason, Reason::BadSvid, "{e}");
    assert!(e.detail.contains("CA"), "{e}");
}

fn expired(ca: &Ca, uri: &str) -> Issued {
    ca.issue(&Leaf {
        uris: vec![uri],
        is_ca: false,
        validity: Some(((2020, 1, 1), (2021, 1, 1))),
    })
}

/// 2020-06-01, inside `expired`'s validity.
fn in_2020() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_590_969_600))
}

#[test]
fn an_expired_certificate_is_refused_at_load_and_in_a_handshake() {
    let ca = Ca::new("mesh ca");
    let old = expired(&ca, API);
    let e = refusal(&files(&old, &ca), now());
    assert_eq!(e.reason, Reason::Expired, "{e}");
    // Loaded while it was valid, presented now: the client refuses it.
    let server =
        configs(Identity::from_pem(&files(&old, &ca), in_2020()).unwrap_or_else(|e| panic!("{e}")));
    let client = configs(identity(&ca.svid(WEB), &ca));
    assert_eq!(
        client_failure(connect(&client, API, &server)),
        Reason::Expired
    );
    // And an expired client certificate is refused by the server.
    let server = configs(identity(&ca.svid(API), &ca));
    let client = configs(
        Identity::from_pem(&files(&expired(&ca, WEB), &ca), in_2020())
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let client_config = client.client_config(API).unwrap_or_else(|e| panic!("{e}"));
    let mut c = ClientConnection::new(client_config, name).unwrap_or_else(|e| panic!("{e}"));
    let mut s = ServerConnection::new(server.server_config()).unwrap_or_else(|e| panic!("{e}"));
    match handshake(&mut c, &mut s) {
        Err(HandshakeError::Server(e)) => assert_eq!(Reason::of_tls_error(&e), Reason::Expired),
        other => panic!("{other:?}"),
    }
    // The client learns why from the server's alert.
    send_alert(&mut s, &mut c);
    match c.process_new_packets() {
        Err(e) => assert_eq!(Reason::of_tls_error(&e), Reason::Expired, "{e}"),
        Ok(_) => panic!("the client saw no alert"),
    }
}

#[test]
fn an_unknown_ca_is_refused_at_load_and_by_both_sides() {
    let ca = Ca::new("mesh ca");
    let other = Ca::new("other ca");
    let e = refusal(&files(&other.svid(API), &ca), now());
    assert_eq!(e.reason, Reason::UnknownCa, "{e}");
    // Each side trusts its own CA only.
    let server = configs(identity(&ca.svid(API), &ca));
    let stranger = configs(identity(&other.svid(WEB), &other));
    assert_eq!(
        client_failure(connect(&stranger, API, &server)),
        Reason::UnknownCa
    );
    // A client that trusts the server's CA but holds a certificate from another one.
    let mixed = PemFiles {
        trust_anchors: format!("{}{}", ca.pem, other.pem).into_bytes(),
        ..files(&other.svid(WEB), &other)
    };
    let client = configs(Identity::from_pem(&mixed, now()).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(
        server_failure(connect(&client, API, &server)),
        Reason::UnknownCa
    );
}

#[test]
fn an_endpoint_with_another_identity_is_refused_as_identity_mismatch() {
    let ca = Ca::new("mesh ca");
    let server = configs(identity(&ca.svid(API), &ca));
    let client = configs(identity(&ca.svid(WEB), &ca));
    assert_eq!(
        client_failure(connect(
            &client,
            "spiffe://td.test/ns/prod/sa/billing",
            &server
        )),
        Reason::IdentityMismatch
    );
    assert!(client.client_config("not-an-id").is_err());
}

#[test]
fn a_client_without_a_certificate_is_refused_as_no_client_cert() {
    let ca = Ca::new("mesh ca");
    let server = configs(identity(&ca.svid(API), &ca));
    let verifier = super::verify_server::SpiffeServerVerifier::new(server.store().clone(), id(API));
    let anonymous = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| panic!("{e}"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    assert_eq!(
        server_failure(connect_with(Arc::new(anonymous), server.server_config())),
        Reason::NoClientCert
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_as_key_mismatch() {
    let ca = Ca::new("mesh ca");
    let one = ca.svid(API);
    let two = ca.svid(API);
    let mixed = PemFiles {
        key: two.key.into_bytes(),
        ..files(&one, &ca)
    };
    assert_eq!(refusal(&mixed, now()).reason, Reason::KeyMismatch);
    let garbage = PemFiles {
        cert: b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".to_vec(),
        ..files(&one, &ca)
    };
    assert_eq!(refusal(&garbage, now()).reason, Reason::BadPem);
    let empty = PemFiles {
        key: Vec::new(),
        ..files(&one, &ca)
    };
    assert_eq!(refusal(&empty, now()).reason, Reason::BadPem);
}

/// Settings over three files in `dir`.
fn settings_in(dir: &TempDir) -> IdentitySettings {
    IdentitySettings {
        cert: dir.path("svid.pem"),
        key: dir.path("svid.key"),
        trust_anchors: dir.path("bundle.pem"),
        ..IdentitySettings::default()
    }
}

fn install_files(dir: &TempDir, issued: &Issued, ca: &Ca) {
    dir.replace("svid.pem", &issued.cert);
    dir.replace("svid.key", &issued.key);
    dir.replace("bundle.pem", &ca.pem);
}

#[test]
fn rotation_reaches_new_handshakes_and_broken_files_keep_the_identity_in_force() {
    let ca = Ca::new("mesh ca");
    let dir = TempDir::new("rotation");
    let first = ca.svid(API);
    install_files(&dir, &first, &ca);
    let settings = settings_in(&dir);
    let store =
        IdentityStore::new(Identity::load(&settings, now()).unwrap_or_else(|e| panic!("{e}")));
    let metrics = std::sync::Arc::new(IdentityMetrics::new());
    let mut reloader = Reloader::new(settings.clone(), store.clone(), metrics.clone());
    let server = TlsConfigs::new(store.clone());
    let client = configs(identity(&ca.svid(WEB), &ca));
    let old_server_config = server.server_config();
    let old_client_config = client.client_config(API).unwrap_or_else(|e| panic!("{e}"));
    let presented = |c: &ClientConnection| c.peer_certificates().map(|certs| certs[0].clone());

    let (mut c1, mut s1) = connect_with(old_client_config.clone(), old_server_config.clone())
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(presented(&c1), Some(leaf_der(&first)));
    assert_eq!(reloader.poll(now()), None, "nothing changed yet");

    // A renewal: a new key and certificate for the same identity.
    let second = ca.svid(API);
    install_files(&dir, &second, &ca);
    match reloader.poll(now()) {
        Some(ReloadOutcome::Installed { id: new_id, .. }) => assert_eq!(new_id, id(API)),
        other => panic!("{other:?}"),
    }
    let (c2, _) = connect_with(old_client_config.clone(), old_server_config.clone())
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        presented(&c2),
        Some(leaf_der(&second)),
        "the same config objects, the new certificate"
    );
    assert_eq!(
        send(&mut c1, &mut s1, b"still up"),
        b"still up",
        "the older connection goes on"
    );
    assert_eq!(presented(&c1), Some(leaf_der(&first)));

    // Broken, mismatched, expired, foreign and non-SVID files are refused; the second
    // certificate stays in force.
    let third = ca.svid(API);
    let foreign = Ca::new("other ca").svid(API);
    let old = expired(&ca, API);
    let two_ids = ca.issue(&Leaf {
        uris: vec![API, WEB],
        is_ca: false,
        validity: None,
    });
    let refused = [
        (
            "garbage",
            "not a certificate",
            second.key.as_str(),
            Reason::BadPem,
        ),
        (
            "mismatch",
            third.cert.as_str(),
            second.key.as_str(),
            Reason::KeyMismatch,
        ),
        (
            "other ca",
            foreign.cert.as_str(),
            foreign.key.as_str(),
            Reason::UnknownCa,
        ),
        (
            "expired",
            old.cert.as_str(),
            old.key.as_str(),
            Reason::Expired,
        ),
        (
            "two ids",
            two_ids.cert.as_str(),
            two_ids.key.as_str(),
            Reason::BadSvid,
        ),
    ];
    for (what, cert, key, reason) in refused {
        dir.replace("svid.key", key);
        dir.replace("svid.pem", cert);
        match reloader.poll(now()) {
            Some(ReloadOutcome::Refused(e)) => assert_eq!(e.reason, reason, "{what}: {e}"),
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(
            reloader.poll(now()),
            None,
            "{what}: refused once, not at every poll"
        );
        let (c, _) = connect_with(old_client_config.clone(), server.server_config())
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(presented(&c), Some(leaf_der(&second)), "{what}");
        assert_eq!(
            store.current().certified.cert[0],
            leaf_der(&second),
            "{what}"
        );
    }
    // A missing file is refused as unreadable.
    let _ = std::fs::remove_file(dir.path("svid.key"));
    match reloader.poll(now()) {
        Some(ReloadOutcome::Refused(e)) => assert_eq!(e.reason, Reason::Unreadable, "{e}"),
        other => panic!("{other:?}"),
    }
    // Good files again.
    install_files(&dir, &third, &ca);
    assert!(matches!(
        reloader.poll(now()),
        Some(ReloadOutcome::Installed { .. })
    ));
    let (c3, _) =
        connect_with(old_client_config, old_server_config).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(presented(&c3), Some(leaf_der(&third)));

    assert_eq!(metrics.reloads_ok(), 2);
    assert_eq!(metrics.reloads_refused(Reason::BadPem), 1);
    assert_eq!(metrics.reloads_refused(Reason::KeyMismatch), 1);
    assert_eq!(metrics.reloads_refused(Reason::UnknownCa), 1);
    assert_eq!(metrics.reloads_refused(Reason::Expired), 1);
    assert_eq!(metrics.reloads_refused(Reason::BadSvid), 1);
    assert_eq!(metrics.reloads_refused(Reason::Unreadable), 1);
    assert_eq!(metrics.expiry(), store.current().not_after);
}

#[test]
fn the_watcher_thread_installs_a_renewal() {
    let ca = Ca::new("mesh ca");
    let dir = TempDir::new("watcher");
    install_files(&dir, &ca.svid(API), &ca);
    let settings = IdentitySettings {
        reload_interval_ms: 100,
        ..settings_in(&dir)
    };
    let store =
        IdentityStore::new(Identity::load(&settings, now()).unwrap_or_else(|e| panic!("{e}")));
    let metrics = std::sync::Arc::new(IdentityMetrics::new());
    let watcher = Watcher::spawn(Reloader::new(settings, store.clone(), metrics.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let renewed = ca.svid(API);
    install_files(&dir, &renewed, &ca);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.current().certified.cert[0] != leaf_der(&renewed) {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewal was not installed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(watcher);
    assert!(metrics.reloads_ok() >= 1);
}
