//! Certificate authorities and X.509-SVIDs made with rcgen, for the identity tests that run
//! the proxy's code from outside.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::PathBuf;

pub const ID: &str = "spiffe://td.test/ns/prod/sa/api";

pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

pub fn ca(name: &str) -> Ca {
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
pub fn svid(ca: &Ca, until: Option<i32>) -> (String, String) {
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

/// A directory removed when dropped.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "coremesh-identity-test-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        ok(std::fs::create_dir_all(&dir));
        Dir(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        ok(std::fs::write(&path, text));
        path
    }

    /// A configuration naming these files, and its path.
    pub fn config(&self, cert: &str, key: &str, anchors: &str) -> PathBuf {
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

impl Dir {
    /// A configuration naming `svid.pem`, `svid.key` and `bundle.pem` in this directory,
    /// whatever they are (files or links), and its path.
    pub fn config_linked(&self) -> PathBuf {
        let name = |n: &str| self.0.join(n).display().to_string();
        let text = format!(
            "[identity]\ncert = {:?}\nkey = {:?}\ntrust_anchors = {:?}\n",
            name("svid.pem"),
            name("svid.key"),
            name("bundle.pem")
        );
        self.write("mesh.toml", &text)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
