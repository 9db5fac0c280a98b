//! `coremesh identity check --config FILE` as a process, over certificates made by rcgen:
//! a good SVID prints its identity and expiry and exits 0; an expired certificate, a key
//! that is not the certificate's, a certificate from another CA and a file without
//! `[identity]` exit 1 with the reason; an invalid configuration exits 2.

mod identity_pki;

use identity_pki::{ca, ok, svid, Ca, Dir};
use std::path::Path;
use std::process::Command;

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
