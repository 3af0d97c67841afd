//! Who may see `/status` and `/api/status`: with accounts configured (`auth.users`) and
//! `status.require_auth` on, a request must carry one of them as HTTP Basic credentials
//! (RFC 7617), the same login and passcode as a STOMP CONNECT; otherwise anyone may look.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hyper::header::HeaderValue;

use crate::auth::{Authenticator, Check};
use crate::login_check::Verdict;
use crate::node::Node;

/// The challenge a refused request gets in `WWW-Authenticate`.
pub const CHALLENGE: &str = "Basic realm=\"stomp-edge status\", charset=\"UTF-8\"";

/// Longest `Authorization` value looked at; longer ones are refused unread.
const MAX_HEADER_BYTES: usize = 1024;

/// Whether a request with this `Authorization` header may look. A hashed passcode is checked
/// off the event loop, in the queue CONNECTs use (`crate::login_check`); when that queue is full
/// the request is refused like a wrong passcode.
pub async fn allowed(node: &Node, require_auth: bool, authorization: Option<&HeaderValue>) -> bool {
    let check = decide(&node.auth.borrow(), require_auth, authorization);
    match check {
        Check::Allowed => true,
        Check::Refused => false,
        Check::Verify(verification) => {
            let max = node.config().auth.max_pending_logins;
            let Ok(job) = node.login_checks.submit(verification, max, None) else { return false };
            job.finished().await;
            match job.verdict() {
                Some(verdict @ (Verdict::Matched | Verdict::Mismatched)) => {
                    let matched = verdict == Verdict::Matched;
                    // False when a reload replaced the account meanwhile.
                    node.auth.borrow().remember(job.verification(), matched) && matched
                }
                _ => false,
            }
        }
    }
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
