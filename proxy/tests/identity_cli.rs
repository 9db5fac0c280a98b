//! `coremesh identity check --config FILE` as a process, over certificates made by rcgen:
//! a good SVID prints its identity and expiry and exits 0; an expired certificate, a key
//! that is not the certificate's, a certificate from another CA and a file without
//! `[identity]` exit 1 with the reason; an invalid configuration exits 2.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::process::Command;

const ID: &str = "spiffe://td.test/ns/prod/sa/api";

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
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

/// (certificate, key) PEM for `ID`; `until` (a year): valid from 2020 until then.
fn svid(ca: &Ca, until: Option<i32>) -> (String, String) {
    let key = ok(KeyPair::generate());
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(ok(ID.try_into()))];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if let Some(year) = until {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
    }
    let cert = ok(params.signed_by(&key, &ca.issuer));
    (cert.pem(), key.serialize_pem())
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "coremesh-identity-cli-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        ok(std::fs::create_dir_all(&dir));
        Dir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        ok(std::fs::write(&path, text));
        path
    }

    /// A configuration naming these files, and its path.
    fn config(&self, cert: &str, key: &str, anchors: &str) -> PathBuf {
        let cert = self.write("svid.pem", cert);
        let key = self.write("svid.key", key);
        let anchors = self.write("bundle.pem", anchors);
        let text = format!(
            "[identity]\ncert = {:?}\nkey = {:?}\ntrust_anchors = {:?}\n",
            cert.display().to_string(),
            key.display().to_string(),
            anchors.display().to_string()
        );
        self.write("mesh.toml", &text)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check(config: &Path) -> (Option<i32>, String, String) {
    let out = ok(Command::new(env!("CARGO_BIN_EXE_coremesh"))
        .args(["identity", "check", "--config"])
        .arg(config)
        .output());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_good_svid_prints_its_identity_and_expiry() {
    let dir = Dir::new("good");
    let ca = ca("mesh ca");
    let (cert, key) = svid(&ca, Some(2999));
    let (code, out, err) = check(&dir.config(&cert, &key, &ca.pem));
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"identity: spiffe://td.test/ns/prod/sa/api"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("chain: 1 certificate from ") && l.ends_with("(1 anchor)")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("expires: 2999-01-01T00:00:00Z (unix 32472144000, in ")),
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"OK"), "{out}");
}

#[test]
fn broken_identities_exit_1_with_the_reason() {
    let dir = Dir::new("bad");
    let ca = ca("mesh ca");
    let other = ca_other();
    let (cert, key) = svid(&ca, None);
    let (old_cert, old_key) = svid(&ca, Some(2021));
    let (_, another_key) = svid(&ca, None);
    let (stranger_cert, stranger_key) = svid(&other, None);
    let cases = [
        (
            "expired",
            old_cert.as_str(),
            old_key.as_str(),
            ca.pem.as_str(),
        ),
        (
            "key_mismatch",
            cert.as_str(),
            another_key.as_str(),
            ca.pem.as_str(),
        ),
        (
            "unknown_ca",
            stranger_cert.as_str(),
            stranger_key.as_str(),
            ca.pem.as_str(),
        ),
        ("bad_pem", "garbage", key.as_str(), ca.pem.as_str()),
    ];
    for (reason, cert, key, anchors) in cases {
        let (code, out, err) = check(&dir.config(cert, key, anchors));
        assert_eq!(code, Some(1), "{reason}: {out}{err}");
        assert!(
            err.starts_with(&format!("coremesh identity check: refused ({reason}): ")),
            "{reason}: {err}"
        );
        assert_eq!(out, "", "{reason}");
    }
}

fn ca_other() -> Ca {
    ca("another ca")
}

#[test]
fn a_file_without_identity_exits_1_and_an_invalid_one_2() {
    let dir = Dir::new("config");
    let plain = dir.write("plain.toml", "[proxy]\ncores = 1\n");
    let (code, _, err) = check(&plain);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("has no [identity] section"), "{err}");
    let invalid = dir.write("invalid.toml", "[identity]\ncert = \"a\"\nkey = \"b\"\n");
    let (code, _, err) = check(&invalid);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("trust_anchors"), "{err}");
}
