//! The certificates of the `mtls` scenario, made with rcgen in the run's work folder: one
//! CA, and an X.509-SVID for each proxy (ECDSA P-256, one SPIFFE URI SAN, not a CA, usable
//! as client and as server certificate). Proxy B's leaf also carries a DNS name, so that
//! proxies that check a host name rather than a SPIFFE ID (nginx's `proxy_ssl_name`,
//! HAProxy's `verifyhost`) verify it too. Every contender uses the same files.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Proxy A's identity.
pub const CLIENT_ID: &str = "spiffe://coremesh-bench.test/ns/bench/sa/client";
/// Proxy B's identity.
pub const SERVER_ID: &str = "spiffe://coremesh-bench.test/ns/bench/sa/server";
/// The DNS name in proxy B's leaf.
pub const SERVER_NAME: &str = "server.coremesh-bench.test";

/// The files written, by placeholder name (`ca`, `client_cert`, … of
/// [`super::mtls_file::MTLS_VARS`]), and the identities.
#[derive(Debug, Clone)]
pub struct Certs {
    pub dir: PathBuf,
    pub files: BTreeMap<&'static str, PathBuf>,
}

impl Certs {
    /// Make the CA and both leaves and write them under `dir` (created).
    pub fn write(dir: &Path) -> anyhow::Result<Certs> {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "coremesh-bench mtls CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = params.self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(params, ca_key);
        let leaf = |id: &str, dns: Option<&str>| -> anyhow::Result<(String, String)> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, dns.unwrap_or("coremesh-bench client"));
            params.distinguished_name = dn;
            params.subject_alt_names = vec![SanType::URI(id.try_into()?)];
            if let Some(name) = dns {
                params
                    .subject_alt_names
                    .push(SanType::DnsName(name.try_into()?));
            }
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (client_cert, client_key) = leaf(CLIENT_ID, None)?;
        let (server_cert, server_key) = leaf(SERVER_ID, Some(SERVER_NAME))?;
        let mut files = BTreeMap::new();
        let mut put = |name: &'static str, file: &str, text: &str| -> anyhow::Result<()> {
            let path = dir.join(file);
            std::fs::write(&path, text).with_context(|| format!("{}", path.display()))?;
            files.insert(name, path);
            Ok(())
        };
        put("ca", "ca.pem", &ca_pem)?;
        put("client_cert", "client.pem", &client_cert)?;
        put("client_key", "client.key", &client_key)?;
        put(
            "client_pem",
            "client-with-key.pem",
            &format!("{client_cert}{client_key}"),
        )?;
        put("server_cert", "server.pem", &server_cert)?;
        put("server_key", "server.key", &server_key)?;
        put(
            "server_pem",
            "server-with-key.pem",
            &format!("{server_cert}{server_key}"),
        )?;
        Ok(Certs {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// The certificate placeholders: the files, the identities and B's DNS name.
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = self
            .files
            .iter()
            .map(|(k, p)| (k.to_string(), p.display().to_string()))
            .collect();
        vars.insert("client_id".into(), CLIENT_ID.into());
        vars.insert("server_id".into(), SERVER_ID.into());
        vars.insert("server_name".into(), SERVER_NAME.into());
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_certificate_placeholder_is_set() {
        let dir = std::env::temp_dir().join(format!("coremesh-bench-certs-{}", std::process::id()));
        let certs = Certs::write(&dir).expect("certificates");
        let vars = certs.vars();
        for name in &super::super::mtls_file::MTLS_VARS[..10] {
            assert!(vars.contains_key(*name), "{name}");
        }
        let server = std::fs::read_to_string(&certs.files["server_pem"]).expect("read");
        assert_eq!(server.matches("BEGIN CERTIFICATE").count(), 1);
        assert_eq!(server.matches("BEGIN PRIVATE KEY").count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
