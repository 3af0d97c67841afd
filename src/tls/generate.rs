//! `stomp-edge --generate-cert DIR`: a self-signed certificate (ECDSA P-256, rcgen with ring)
//! for the board's names — its host name, `<host>.local` (mDNS), `localhost` — and its
//! addresses, written as `DIR/cert.pem` and `DIR/key.pem` (the key readable by its owner
//! only), so a LAN without a CA turns TLS on in one step. Browsers ask once to accept it;
//! people check the SHA-256 fingerprint printed here against what the browser shows.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, KeyPair, SanType};

/// Years the certificate is valid for, from the start of the current year.
const VALID_YEARS: i32 = 10;
/// The earliest year the certificate starts in: a board without a real-time clock may
/// generate before its clock is set (it then reads 1970).
const EARLIEST_YEAR: i32 = 2026;

/// Writes the pair for this board into `dir` (created if missing; existing files are never
/// overwritten) and returns what to tell the operator: the paths, the names covered, the
/// fingerprint and the config lines.
pub fn run(dir: &Path) -> Result<String, String> {
    let host = crate::board::advertise::host_name();
    let mut names = vec![host.clone()];
    if host != "localhost" && !host.contains('.') {
        names.push(format!("{host}.local"));
    }
    if !names.iter().any(|n| n == "localhost") {
        names.push("localhost".to_string());
    }
    let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])];
    for ip in crate::board::advertise::local_addresses() {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let (cert, key, fingerprint) = write_pair(dir, &names, &ips)?;
    let covered: Vec<String> = names.iter().cloned().chain(ips.iter().map(IpAddr::to_string)).collect();
    Ok(format!(
        "wrote {cert} and {key} (self-signed, for {covered})\n\
         SHA-256 fingerprint: {fingerprint}\n\
         To serve HTTPS and wss://, add to the configuration:\n\
         [tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n",
        cert = cert.display(),
        key = key.display(),
        covered = covered.join(", "),
    ))
}

/// Generates a key and a self-signed certificate for `names` (DNS names) and `ips`, writes
/// `dir/cert.pem` and `dir/key.pem` (mode 0600), and returns their paths and the fingerprint.
/// Fails, naming the file, if either exists or cannot be written.
pub fn write_pair(
    dir: &Path,
    names: &[String],
    ips: &[IpAddr],
) -> Result<(PathBuf, PathBuf, String), String> {
    let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|e| format!("cannot make a certificate for {names:?}: {e}"))?;
    params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let common_name = names.first().map_or("stomp-edge", String::as_str);
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "stomp-edge self-signed");
    let year = current_year().max(EARLIEST_YEAR);
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
    let cert = params.self_signed(&key).map_err(|e| format!("cannot sign the certificate: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(format!(
                "{} exists already; not overwriting it (move it away first)",
                path.display()
            ));
        }
    }
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path, super::fingerprint(cert.der())))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The calendar year of the system clock (UTC), to within a day.
fn current_year() -> i32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // 365.2425 days per Gregorian year.
    1970 + (secs / 31_556_952) as i32
}
