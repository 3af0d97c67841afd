//! Checks CONNECT credentials against the configured accounts. With no accounts every client
//! is let in anonymously (the embedded default). A passcode is stored plain (the LAN default,
//! compared in constant time with `subtle`) or as an Argon2 PHC string (`$argon2id$…`, made by
//! `stomp-edge --hash-passcode`). Verifying a hash costs about a hundred milliseconds of CPU
//! on a board, on the event loop, so the outcome is remembered for the process lifetime (until
//! a reload replaces the accounts), as a BLAKE2s digest of login and passcode, never the
//! passcode itself: the passcode that last verified per account (1000 clients of one account
//! reconnecting after a restart cost one hash, then one constant-time compare each) and the
//! last [`REMEMBERED_FAILURES`] wrong ones (a client retrying a stale passcode in a loop costs
//! one hash, not one per attempt).

use std::cell::RefCell;
use std::collections::VecDeque;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use blake2::{Blake2s256, Digest};
use subtle::ConstantTimeEq;

/// The prefix that marks a configured passcode as an Argon2 hash rather than plain text.
pub const HASH_PREFIX: &str = "$argon2";

/// How many distinct wrong (login, passcode) pairs for hashed accounts are remembered.
pub const REMEMBERED_FAILURES: usize = 64;

/// A BLAKE2s digest of a login and passcode: what is remembered of a checked passcode.
type Fingerprint = [u8; 32];

fn fingerprint(login: &str, passcode: &str) -> Fingerprint {
    let mut h = Blake2s256::new();
    h.update((login.len() as u64).to_le_bytes());
    h.update(login.as_bytes());
    h.update(passcode.as_bytes());
    h.finalize().into()
}

/// One configured account.
struct Account {
    login: String,
    secret: Secret,
}

enum Secret {
    Plain(String),
    /// An Argon2 PHC string; checked by `Account`'s verifier.
    Hashed(String),
}

/// The configured accounts.
pub struct Authenticator {
    accounts: Vec<Account>,
    /// Per account (same index), the fingerprint of the passcode that last verified against its
    /// hash, so that the next CONNECT with it costs a compare instead of an Argon2 run.
    verified: RefCell<Vec<Option<Fingerprint>>>,
    /// Fingerprints of the last wrong passcodes given for hashed accounts, newest last.
    failed: RefCell<VecDeque<Fingerprint>>,
}

impl Authenticator {
    /// `users` are `(login, passcode)` pairs from `auth.users`; a passcode starting with
    /// `$argon2` is a hash (checked when the config is read, see [`check_hash`]).
    pub fn new(users: Vec<(String, String)>) -> Authenticator {
        let accounts: Vec<Account> = users
            .into_iter()
            .map(|(login, pass)| {
                let secret =
                    if pass.starts_with(HASH_PREFIX) { Secret::Hashed(pass) } else { Secret::Plain(pass) };
                Account { login, secret }
            })
            .collect();
        let verified = RefCell::new(accounts.iter().map(|_| None).collect());
        Authenticator { accounts, verified, failed: RefCell::new(VecDeque::new()) }
    }

    pub fn anonymous_allowed(&self) -> bool {
        self.accounts.is_empty()
    }

    /// True when the login and passcode match an account, or when anonymous access is on.
    pub fn check(&self, login: Option<&str>, passcode: Option<&str>) -> bool {
        if self.anonymous_allowed() {
            return true;
        }
        let (Some(login), Some(passcode)) = (login, passcode) else { return false };
        // Compare every plain entry in full so the time taken does not reveal which part
        // matched. (`subtle` compares slices of different lengths as unequal at once: the
        // length of a configured passcode is not hidden, its bytes are.)
        let mut ok = subtle::Choice::from(0);
        for (index, account) in self.accounts.iter().enumerate() {
            let login_ok = account.login.as_bytes().ct_eq(login.as_bytes());
            let pass_ok = match &account.secret {
                Secret::Plain(pass) => pass.as_bytes().ct_eq(passcode.as_bytes()),
                // A hash is only worked on for the account the login names.
                Secret::Hashed(hash) if bool::from(login_ok) => {
                    subtle::Choice::from(u8::from(self.verify_hashed(index, hash, passcode)))
                }
                Secret::Hashed(_) => subtle::Choice::from(0),
            };
            ok |= login_ok & pass_ok;
        }
        ok.into()
    }

    /// Checks `passcode` against account `index`'s hash, or against what is remembered of
    /// earlier checks.
    fn verify_hashed(&self, index: usize, hash: &str, passcode: &str) -> bool {
        let print = fingerprint(&self.accounts[index].login, passcode);
        if let Some(known) = &self.verified.borrow()[index] {
            if bool::from(known.ct_eq(&print)) {
                return true;
            }
        }
        if self.failed.borrow().iter().any(|f| bool::from(f.ct_eq(&print))) {
            return false;
        }
        let ok = PasswordHash::new(hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(passcode.as_bytes(), &parsed).is_ok());
        if ok {
            self.verified.borrow_mut()[index] = Some(print);
        } else {
            let mut failed = self.failed.borrow_mut();
            if failed.len() >= REMEMBERED_FAILURES {
                failed.pop_front();
            }
            failed.push_back(print);
        }
        ok
    }
}

/// Checks that a configured `$argon2…` passcode is a PHC string this server can verify.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not an Argon2 PHC string ({e})"))?;
    argon2::Params::try_from(&parsed).map_err(|e| format!("unusable Argon2 parameters ({e})"))?;
    Ok(())
}

/// The Argon2id hash (PHC string, default parameters: 19 MiB, 2 passes, 1 lane; a fresh
/// random salt) of `passcode`, for `auth.users = ["login:HASH"]`.
pub fn hash_passcode(passcode: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(passcode.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the passcode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_by_default_and_checked_with_users() {
        assert!(Authenticator::new(vec![]).check(None, None));
        let a = Authenticator::new(vec![("alice".into(), "secret".into())]);
        assert!(a.check(Some("alice"), Some("secret")));
        assert!(!a.check(Some("alice"), Some("secre")));
        assert!(!a.check(Some("alice"), Some("secretx")));
        assert!(!a.check(Some("bob"), Some("secret")));
        assert!(!a.check(None, None));
        assert!(!a.check(Some("alice"), None));
    }

    #[test]
    fn lengths_that_differ_by_a_multiple_of_65536_do_not_match() {
        // The old compare folded the length difference into 16 bits: an empty configured
        // passcode matched any passcode of 65,536 bytes.
        let a = Authenticator::new(vec![("alice".into(), String::new())]);
        assert!(a.check(Some("alice"), Some("")));
        for len in [256, 65_536, 131_072] {
            assert!(!a.check(Some("alice"), Some(&"x".repeat(len))), "{len}");
        }
        let a = Authenticator::new(vec![("alice".into(), "s".into())]);
        assert!(!a.check(Some("alice"), Some(&format!("s{}", "\0".repeat(65_536)))));
    }

    #[test]
    fn hashed_passcodes_verify_and_are_remembered() {
        let hash = hash_passcode("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(check_hash(&hash).is_ok());
        assert_ne!(hash, hash_passcode("s3cret").unwrap(), "a fresh salt each time");
        let a = Authenticator::new(vec![("alice".into(), hash), ("bob".into(), "plain".into())]);
        assert!(!a.check(Some("alice"), Some("wrong")));
        assert!(a.verified.borrow()[0].is_none());
        assert_eq!(a.failed.borrow().len(), 1);
        assert!(!a.check(Some("alice"), Some("wrong")));
        assert_eq!(a.failed.borrow().len(), 1, "a remembered failure is not hashed again");
        assert!(a.check(Some("alice"), Some("s3cret")));
        assert_eq!(a.verified.borrow()[0], Some(fingerprint("alice", "s3cret")));
        assert!(a.check(Some("alice"), Some("s3cret")));
        assert!(!a.check(Some("alice"), Some("s3cre")));
        assert!(!a.check(Some("bob"), Some("s3cret")));
        assert!(a.check(Some("bob"), Some("plain")));
        // The hash text itself is not a passcode.
        let hash = hash_passcode("x").unwrap();
        assert!(!Authenticator::new(vec![("c".into(), hash.clone())]).check(Some("c"), Some(&hash)));
        assert!(check_hash("$argon2id$nonsense").is_err());
        // The failure memory is bounded.
        a.failed.borrow_mut().clear();
        a.failed.borrow_mut().extend((0..REMEMBERED_FAILURES).map(|i| fingerprint("alice", &i.to_string())));
        assert!(!a.check(Some("alice"), Some("another wrong one")));
        assert_eq!(a.failed.borrow().len(), REMEMBERED_FAILURES);
    }
}
