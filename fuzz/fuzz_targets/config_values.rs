//! libFuzzer target for the configuration readers: arbitrary text as a `--config` file (the
//! TOML parse, every key's reader and range, the cross-key checks), and arbitrary bytes as the
//! `Host` and `Origin` headers the access rules parse. Checks nothing panics and that a file
//! that is accepted yields a configuration within the declared ranges. Run with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run config_values`.
#![no_main]

use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Uri, Version};
use libfuzzer_sys::fuzz_target;
use stomp_edge::auth::access::{check_host, origin_allowed};
use stomp_edge::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::from_file_text(text, "fuzz") {
            assert!(config.limits.max_header_line_bytes <= config.limits.max_frame_bytes);
            assert!(config.limits.max_connections >= 1);
            assert!(!config.server_id.is_empty());
        }
    }
    // The same bytes as request headers.
    let mut headers = HeaderMap::new();
    let mut halves = data.splitn(2, |&b| b == b'\n');
    if let Some(Ok(host)) = halves.next().map(HeaderValue::from_bytes) {
        headers.insert("host", host);
    }
    if let Some(Ok(origin)) = halves.next().map(HeaderValue::from_bytes) {
        headers.insert("origin", origin);
    }
    let allowed = vec![".lan".to_string(), "board.example".to_string()];
    let _ = check_host(Version::HTTP_11, &Uri::from_static("/"), &headers, &allowed, "http://board.lan:8080");
    let _ = origin_allowed(&headers, &[]);
    let _ = origin_allowed(&headers, &["http://board.lan:8080".to_string()]);
});
