//! TLS on the board's port (HTTPS and `wss://`) with rustls and its `ring` provider: reading
//! the configured PEM certificate chain and key (`[tls] cert_file`, `key_file`), the server
//! settings (cipher order for the board's CPU), the certificate's SHA-256 fingerprint shown in
//! the log and on `/status`, and the running certificate that a SIGHUP swaps. The listener
//! (`crate::transport::server`) hands each accepted socket to the current certificate's acceptor;
//! `socket` carries an upgraded WebSocket over TLS; `generate` writes a self-signed pair for
//! `--generate-cert`.

pub mod generate;
pub mod socket;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CipherSuite, ServerConfig};

/// Most certificates one chain file may hold (a leaf and its intermediates).
pub const MAX_CHAIN: usize = 10;
/// Largest certificate, key or CA file read, in bytes: a system CA bundle (about 220 KB
/// on Debian) is well below.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// A certificate and key read from their files, ready to accept connections with.
pub struct Certificate {
    /// The rustls settings with this certificate; each handshake shares them.
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the board's own certificate (DER), as `AB:CD:…` (what `openssl x509
    /// -fingerprint -sha256` prints), for people to check against what their browser shows.
    pub fingerprint: String,
}

/// The running certificate (None: plain HTTP), replaced whole on a good SIGHUP reload;
/// connections keep the settings they were accepted with.
#[derive(Default)]
pub struct Tls {
    current: RefCell<Option<Rc<Certificate>>>,
}

impl Tls {
    /// The certificate new connections get, if TLS is on.
    pub fn current(&self) -> Option<Rc<Certificate>> {
        self.current.borrow().clone()
    }

    /// The running certificate's fingerprint, if TLS is on.
    pub fn fingerprint(&self) -> Option<String> {
        self.current.borrow().as_ref().map(|c| c.fingerprint.clone())
    }

    pub fn set(&self, certificate: Certificate) {
        *self.current.borrow_mut() = Some(Rc::new(certificate));
    }

    /// SIGHUP: reads `cert_file` and `key_file` again when TLS is on. A good pair replaces the
    /// running certificate for new connections (open ones keep theirs); a bad one keeps it,
    /// counts `tls_reload_failures_total` and is returned as the message to log.
    pub fn reload(&self, cert_file: &str, key_file: &str) -> Result<Option<String>, String> {
        if self.current.borrow().is_none() || cert_file.is_empty() {
            return Ok(None);
        }
        match load(cert_file, key_file) {
            Ok(certificate) => {
                let fingerprint = certificate.fingerprint.clone();
                self.set(certificate);
                Ok(Some(fingerprint))
            }
            Err(e) => {
                crate::observability::metrics::METRICS.tls_reload_failures.inc();
                Err(e)
            }
        }
    }
}

/// Reads the certificate chain and key; errors name the file and what is wrong with it.
pub fn load(cert_file: &str, key_file: &str) -> Result<Certificate, String> {
    let chain = read_chain(cert_file, "tls.cert_file")?;
    let key = read_key(key_file)?;
    let fingerprint = fingerprint(&chain[0]);
    let config = server_config(chain, key).map_err(|e| {
        format!("tls.cert_file {cert_file} and tls.key_file {key_file} cannot be used together: {e}")
    })?;
    Ok(Certificate { config: Arc::new(config), fingerprint })
}

/// Reads a file of PEM certificates (`what` is the config key, for messages): at least one, at
/// most [`MAX_CHAIN`].
pub fn read_chain(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path, what)?;
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(&pem) {
        let cert = item.map_err(|e| format!("{what} {path}: not a readable PEM certificate: {e}"))?;
        if chain.len() == MAX_CHAIN {
            return Err(format!("{what} {path}: more than {MAX_CHAIN} certificates"));
        }
        chain.push(cert);
    }
    if chain.is_empty() {
        return Err(format!("{what} {path}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(chain)
}

fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_pem(path, "tls.key_file")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("tls.key_file {path}: holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)")
        }
        e => format!("tls.key_file {path}: not a readable PEM private key: {e}"),
    })
}

/// Reads `tls.redis_ca_file`: PEM CA certificates (any number, a system bundle too); errors
/// name the file.
pub fn read_ca_file(path: &str) -> Result<Vec<u8>, String> {
    let what = "tls.redis_ca_file";
    let pem = read_pem(path, what)?;
    let mut count = 0;
    for item in CertificateDer::pem_slice_iter(&pem) {
        item.map_err(|e| format!("{what} {path}: not a readable PEM certificate: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!("{what} {path}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(pem)
}

/// Reads a PEM file of at most [`MAX_PEM_BYTES`].
pub fn read_pem(path: &str, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{what} {path}: cannot open: {e}"))?;
    let mut pem = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("{what} {path}: cannot read: {e}"))?;
    if pem.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{what} {path}: larger than {MAX_PEM_BYTES} bytes"));
    }
    Ok(pem)
}

/// The rustls server settings for a chain and its key, with [`provider`]'s cipher order.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let chacha_first = !aes_in_hardware();
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider(chacha_first)))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // Without AES instructions the board's choice wins: ChaCha20-Poly1305 is several times
    // cheaper there than constant-time software AES. With them, the client's order is kept
    // (browsers without AES instructions ask for ChaCha first themselves).
    config.ignore_client_order = chacha_first;
    Ok(config)
}

/// rustls's `ring` provider; with `chacha_first`, its ChaCha20-Poly1305 suites are moved
/// ahead of the AES-GCM ones (ring's own order lists AES-GCM first). The version is chosen
/// before the suite, so TLS 1.3 stays preferred.
pub fn provider(chacha_first: bool) -> CryptoProvider {
    // Deprecated in rustls 0.23.48 only as a nudge towards aws-lc-rs (post-quantum key
    // exchange), which needs cmake to cross-build; ring builds with the boards' cross gcc.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if chacha_first {
        provider.cipher_suites.sort_by_key(|s| !is_chacha(s.suite()));
    }
    provider
}

fn is_chacha(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// Whether this CPU has AES instructions ring uses for AES-GCM (x86 AES-NI with PCLMULQDQ,
/// the ARMv8 Cryptography Extension's AES and PMULL). The Raspberry Pi 4's Cortex-A72 has none,
/// the Pi 5's Cortex-A76 has them; 32-bit ARM boards never do.
pub fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64")))]
    {
        false
    }
}

/// The ciphers this CPU prefers, for the start-up log.
pub fn cipher_preference() -> &'static str {
    if aes_in_hardware() {
        "AES instructions present: the client's cipher order is followed"
    } else {
        "no AES instructions: ChaCha20-Poly1305 preferred"
    }
}

/// SHA-256 of `der` as upper-case hex pairs joined by `:`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(95);
    for (i, byte) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{byte:02X}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chacha_goes_first_only_when_asked_and_tls13_suites_keep_their_place() {
        let plain: Vec<_> = provider(false).cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(plain[0], CipherSuite::TLS13_AES_256_GCM_SHA384);
        let chacha: Vec<_> = provider(true).cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(chacha[0], CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        assert_eq!(chacha.len(), plain.len());
        let first_aes = chacha.iter().position(|s| !is_chacha(*s)).unwrap_or(0);
        assert!(chacha[first_aes..].iter().all(|s| !is_chacha(*s)));
    }

    #[test]
    fn the_fingerprint_is_sha256_in_openssl_form() {
        // `printf abc | sha256sum`
        assert_eq!(
            fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn missing_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("stomp-edge-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not pem\n").expect("write");
        let bad = bad.to_string_lossy().to_string();
        let missing = dir.join("missing.pem").to_string_lossy().to_string();
        let e = load(&missing, &bad).err().unwrap_or_default();
        assert!(e.contains("tls.cert_file") && e.contains(&missing), "{e}");
        let e = load(&bad, &bad).err().unwrap_or_default();
        assert!(e.contains("tls.cert_file") && e.contains("no PEM certificate"), "{e}");
        let (cert, _key, _) = generate::write_pair(&dir, &["localhost".into()], &[]).expect("generate");
        let e = load(&cert.to_string_lossy(), &bad).err().unwrap_or_default();
        assert!(e.contains("tls.key_file") && e.contains(&bad), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
