//! Test certificates made with rcgen, and mosquitto TLS listeners using them,
//! for tests/tls.rs and tests/promises.rs.

use std::path::{Path, PathBuf};

use mqtt::{PemSource, TlsOptions};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

use super::{Broker, unique_temp_dir};

/// A CA and certificates it signed, as PEM files in a temp dir (removed on drop).
pub struct Pki {
    pub dir: PathBuf,
    ca_cert: Certificate,
    ca_key: KeyPair,
}

pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let pki = Pki {
            dir: unique_temp_dir("mqtt-tls"),
            ca_cert,
            ca_key,
        };
        pki.write("ca.pem", &pki.ca_cert.pem());
        pki
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP literals), written as
    /// `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, file.to_owned());
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        self.write(&format!("{file}.pem"), &issued.cert_pem);
        self.write(&format!("{file}.key"), &issued.key_pem);
        issued
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A broker whose TLS listener uses `server` (issued by `pki`) and, with
/// `require_client_cert`, demands client certificates signed by `pki`'s CA.
pub fn tls_broker(pki: &Pki, server: &str, require_client_cert: bool) -> Broker {
    let mut settings = format!(
        "cafile {}\ncertfile {}\nkeyfile {}",
        pki.path("ca.pem").display(),
        pki.path(&format!("{server}.pem")).display(),
        pki.path(&format!("{server}.key")).display(),
    );
    if require_client_cert {
        settings.push_str("\nrequire_certificate true");
    }
    Broker::builder().tls_listener(&settings).start()
}

/// A PKI with a server certificate for 127.0.0.1 and localhost.
pub fn pki_for_loopback() -> Pki {
    let pki = Pki::new("loopback");
    pki.issue(
        "server",
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    pki
}

pub fn ca_only(ca: &Path) -> TlsOptions<'_> {
    TlsOptions {
        ca: Some(PemSource::File(ca)),
        ..TlsOptions::default()
    }
}
