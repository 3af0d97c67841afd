//! Who may use the routes behind HTTP Basic (RFC 7617): with accounts configured
//! (`auth.users`) and `status.require_auth` on, `/status`, `/api/status`, `/metrics` (unless
//! the client is in `http.metrics_open_to`) and `/api/rooms/{id}` need one of them, the same
//! login and passcode as a STOMP CONNECT; otherwise anyone may look.
//!
//! Basic is a way to log in like CONNECT, and is guarded the same way: a wrong login or
//! passcode goes through the one failed-login path (`LoginThrottle::record_failure`: the count
//! per client address and per login, `login_failures_total`, the WARN line), and its `401` is
//! answered after the same growing delay a CONNECT would wait, slept in the request's own task
//! (the event loop serves everyone else meanwhile; bounded by `auth.throttle_max_delay_ms`).
//! That is Dovecot's and OpenSSH's answer to guessing (delay the answer to a failure, never a
//! success), not a `429`: a client told when to retry could retry elsewhere at once, and one
//! throttle for both protocols needs one kind of answer. Hashed passcodes are checked in the
//! queue CONNECTs use (`crate::auth::login_check`), unknown logins against the dummy hash.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hyper::header::HeaderValue;

use crate::auth::login_check::Verdict;
use crate::auth::{Authenticator, Check};
use crate::node::Node;

/// The challenge a refused request gets in `WWW-Authenticate`.
pub const CHALLENGE: &str = "Basic realm=\"stomp-edge status\", charset=\"UTF-8\"";

/// Longest `Authorization` value looked at; longer ones are refused unread.
const MAX_HEADER_BYTES: usize = 1024;

/// The answer to a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Let it in.
    Allowed,
    /// `401` with [`CHALLENGE`] (a failed login was already counted, logged and waited out).
    Refused,
    /// `503`: the passcode check could not be taken now (`crate::auth::login_check::Busy`).
    Busy,
}

/// Whether a request from `client` (its real address, `crate::transport::forwarded`) with this
/// `Authorization` header may use `route`. Failed logins are throttled, counted and logged
/// as described in the module doc; a request without the header is refused without counting
/// (a browser's first request, before it asks for the login).
pub async fn allowed(
    node: &Node,
    require_auth: bool,
    authorization: Option<&HeaderValue>,
    client: Option<IpAddr>,
    route: &str,
) -> Access {
    if !require_auth || node.auth.borrow().anonymous_allowed() {
        // Open: credentials are not looked at (so they can neither fail nor clear a record).
        return Access::Allowed;
    }
    let given = authorization.map(|h| credentials(h.as_bytes()));
    let check = decide(&node.auth.borrow(), require_auth, authorization);
    let login = given.as_ref().and_then(|c| c.as_ref()).map(|(login, _)| login.as_str());
    let matched = match check {
        Check::Allowed => true,
        Check::Refused if given.is_none() => return Access::Refused,
        Check::Refused => false,
        Check::Verify(verification) => {
            let config = node.config();
            // An address the throttle slows may have one check waiting, as for CONNECT.
            let throttled =
                client.filter(|_| node.login_throttle.address_throttled(client, &config.auth.throttle()));
            let max = config.auth.max_pending_logins;
            drop(config);
            let Ok(job) = node.login_checks.submit(verification, max, throttled) else { return Access::Busy };
            job.finished().await;
            match job.verdict() {
                Some(verdict @ (Verdict::Matched | Verdict::Mismatched)) => {
                    let matched = verdict == Verdict::Matched;
                    // False when a reload replaced the account meanwhile.
                    node.auth.borrow().remember(job.verification(), matched) && matched
                }
                _ => return Access::Busy,
            }
        }
    };
    if matched {
        node.login_throttle.succeeded(client, login);
        return Access::Allowed;
    }
    let policy = node.config().auth.throttle();
    let delay =
        node.login_throttle.record_failure(client, login, &policy, format_args!("HTTP Basic, {route}"));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Access::Refused
}

/// What the credentials in `authorization` amount to, before any Argon2 run.
fn decide(auth: &Authenticator, require_auth: bool, authorization: Option<&HeaderValue>) -> Check {
    if !require_auth || auth.anonymous_allowed() {
        return Check::Allowed;
    }
    match authorization.and_then(|h| credentials(h.as_bytes())) {
        Some((login, passcode)) => auth.check(Some(&login), Some(&passcode)),
        None => Check::Refused,
    }
}

/// The (login, passcode) of a `Basic` credentials header, if it is one.
fn credentials(header: &[u8]) -> Option<(String, String)> {
    if header.len() > MAX_HEADER_BYTES {
        return None;
    }
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASE64.decode(token.trim().as_bytes()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (login, passcode) = decoded.split_once(':')?;
    Some((login.to_string(), passcode.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn let_in(auth: &Authenticator, require_auth: bool, authorization: Option<&HeaderValue>) -> bool {
        matches!(decide(auth, require_auth, authorization), Check::Allowed)
    }

    fn refused(auth: &Authenticator, require_auth: bool, authorization: Option<&HeaderValue>) -> bool {
        matches!(decide(auth, require_auth, authorization), Check::Refused)
    }

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn accounts_are_asked_for_by_basic() {
        let auth = Authenticator::new(vec![("alice".into(), "s:cret".into())]);
        // "alice:s:cret" (a colon in the passcode is fine: the login ends at the first one).
        let good = header(&format!("Basic {}", BASE64.encode(b"alice:s:cret")));
        assert!(let_in(&auth, true, Some(&good)));
        assert!(let_in(&auth, true, Some(&header(&format!("basic {}", BASE64.encode(b"alice:s:cret"))))));
        let wrong = header(&format!("Basic {}", BASE64.encode(b"alice:secret")));
        assert!(refused(&auth, true, Some(&wrong)));
        assert!(refused(&auth, true, None));
        assert!(refused(&auth, true, Some(&header("Bearer abc"))));
        assert!(refused(&auth, true, Some(&header("Basic !!!"))));
        assert!(refused(&auth, true, Some(&header(&format!("Basic {}", "A".repeat(2000))))));
        // Configured off: open.
        assert!(let_in(&auth, false, None));
    }

    #[test]
    fn without_accounts_anyone_may_look() {
        assert!(let_in(&Authenticator::new(Vec::new()), true, None));
    }
}
