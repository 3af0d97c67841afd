//! Checks CONNECT credentials against the configured accounts. With no accounts every client
//! is let in anonymously (the embedded default). A passcode is stored plain (the LAN default,
//! compared in constant time with `subtle`) or as an Argon2 PHC string (`$argon2id$…`, made by
//! `stomp-edge --hash-passcode`). Verifying a hash costs about a hundred milliseconds of CPU
//! (several times that on a board) and its 19 MiB: it runs off the event loop, one at a time
//! (`crate::auth::login_check`), and the outcome is remembered for the process lifetime (until
//! a reload replaces the accounts), as a BLAKE2s digest of login and passcode, never the
//! passcode itself: the passcode that last verified per account (1000 clients of one account
//! reconnecting after a restart cost one hash, then one constant-time compare each) and the
//! last [`REMEMBERED_FAILURES`] wrong ones (a client retrying a stale passcode in a loop costs
//! one hash, not one per attempt).

pub mod access;
pub(crate) mod login_check;
pub(crate) mod login_throttle;

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
    /// Fingerprints of the last wrong passcodes given for hashed accounts (and for unknown
    /// logins, see `dummy`), newest last.
    failed: RefCell<VecDeque<Fingerprint>>,
    /// The costliest configured hash (largest `m`), when there is one: an unknown login's
    /// passcode is checked against it, through the same queue, and always fails, so that an
    /// unknown login costs what a known hashed one does (no timing hint of which logins exist).
    dummy: Option<String>,
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
        let dummy = accounts
            .iter()
            .filter_map(|a| match &a.secret {
                Secret::Hashed(hash) => Some(hash),
                Secret::Plain(_) => None,
            })
            .max_by_key(|hash| hash_memory_bytes(hash))
            .cloned();
        Authenticator { accounts, verified, failed: RefCell::new(VecDeque::new()), dummy }
    }

    pub fn anonymous_allowed(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Checks a CONNECT's login and passcode: [`Check::Allowed`] when they match a plain
    /// account, a remembered hashed passcode, or anonymous access is on; [`Check::Refused`]
    /// when they match nothing (or a remembered wrong passcode); [`Check::Verify`] when the
    /// login names a hashed account and the passcode is not remembered: an Argon2 run must
    /// decide, off the event loop (`crate::auth::login_check`), and [`Authenticator::remember`] keeps
    /// its outcome. With hashed accounts configured, an unknown login gets a [`Check::Verify`]
    /// too, against the costliest configured hash, that never matches (the same cost as a
    /// known hashed login: no timing hint of which logins exist). Cheap and constant-time in
    /// the passcode's bytes either way.
    pub fn check(&self, login: Option<&str>, passcode: Option<&str>) -> Check {
        if self.anonymous_allowed() {
            return Check::Allowed;
        }
        let (Some(login), Some(passcode)) = (login, passcode) else { return Check::Refused };
        // Compare every plain entry in full so the time taken does not reveal which part
        // matched. (`subtle` compares slices of different lengths as unequal at once: the
        // length of a configured passcode is not hidden, its bytes are.)
        let mut ok = subtle::Choice::from(0);
        let mut known = subtle::Choice::from(0);
        let mut verify = None;
        for (index, account) in self.accounts.iter().enumerate() {
            let login_ok = account.login.as_bytes().ct_eq(login.as_bytes());
            known |= login_ok;
            let pass_ok = match &account.secret {
                Secret::Plain(pass) => pass.as_bytes().ct_eq(passcode.as_bytes()),
                // A hash is only worked on for the account the login names.
                Secret::Hashed(hash) if bool::from(login_ok) => match self.recall(index, passcode) {
                    Some(known) => subtle::Choice::from(u8::from(known)),
                    None => {
                        if verify.is_none() {
                            verify = Some(Verification::new(&account.login, hash, passcode));
                        }
                        subtle::Choice::from(0)
                    }
                },
                Secret::Hashed(_) => subtle::Choice::from(0),
            };
            ok |= login_ok & pass_ok;
        }
        match (bool::from(ok), verify, &self.dummy) {
            (true, _, _) => Check::Allowed,
            (false, Some(v), _) => Check::Verify(v),
            // An unknown login costs a hash too, unless this passcode was already tried with it.
            (false, None, Some(hash)) if !bool::from(known) => {
                let print = fingerprint(login, passcode);
                if self.failed.borrow().iter().any(|f| bool::from(f.ct_eq(&print))) {
                    Check::Refused
                } else {
                    let mut v = Verification::new(login, hash, passcode);
                    v.dummy = true;
                    Check::Verify(v)
                }
            }
            (false, None, _) => Check::Refused,
        }
    }

    /// What is remembered of `passcode` for account `index`: Some(true) when it last verified,
    /// Some(false) when it is a remembered wrong one, None when it takes an Argon2 run.
    fn recall(&self, index: usize, passcode: &str) -> Option<bool> {
        let print = fingerprint(&self.accounts[index].login, passcode);
        if let Some(known) = &self.verified.borrow()[index] {
            if bool::from(known.ct_eq(&print)) {
                return Some(true);
            }
        }
        if self.failed.borrow().iter().any(|f| bool::from(f.ct_eq(&print))) {
            return Some(false);
        }
        None
    }

    /// Keeps the outcome of a finished [`Verification`], so the next CONNECT with the same
    /// passcode is a compare. Returns false, remembering nothing, when the account no longer has
    /// the hash that was checked (a reload changed or removed it meanwhile): the outcome is
    /// stale and must not let anyone in.
    pub fn remember(&self, verification: &Verification, matched: bool) -> bool {
        if verification.dummy {
            // An unknown login's check: its failure is remembered like a known login's.
            let current = self.dummy.as_ref() == Some(&verification.hash)
                && !self.accounts.iter().any(|a| a.login == verification.login);
            if current {
                self.remember_failure(verification.print);
            }
            return current;
        }
        let Some(index) = self.accounts.iter().position(|a| {
            a.login == verification.login && matches!(&a.secret, Secret::Hashed(h) if *h == verification.hash)
        }) else {
            return false;
        };
        if matched {
            self.verified.borrow_mut()[index] = Some(verification.print);
        } else {
            self.remember_failure(verification.print);
        }
        true
    }

    /// Keeps a wrong passcode's fingerprint among the last [`REMEMBERED_FAILURES`].
    fn remember_failure(&self, print: Fingerprint) {
        let mut failed = self.failed.borrow_mut();
        if !failed.iter().any(|f| *f == print) {
            if failed.len() >= REMEMBERED_FAILURES {
                failed.pop_front();
            }
            failed.push_back(print);
        }
    }

    /// [`Authenticator::check`] with any Argon2 run done here and now (tests).
    #[cfg(test)]
    fn check_now(&self, login: Option<&str>, passcode: Option<&str>) -> bool {
        match self.check(login, passcode) {
            Check::Allowed => true,
            Check::Refused => false,
            Check::Verify(v) => {
                let ok = v.run();
                self.remember(&v, ok) && ok
            }
        }
    }
}

/// The outcome of [`Authenticator::check`].
#[derive(Debug)]
pub enum Check {
    /// The credentials match (or no accounts are configured).
    Allowed,
    /// They do not match.
    Refused,
    /// Only an Argon2 run can tell: see [`Verification::run`].
    Verify(Verification),
}

/// One Argon2 check to run: a hashed account's PHC string and the passcode a CONNECT gave.
/// Owns its data (`Send`), so it can run on a blocking thread.
#[derive(Clone)]
pub struct Verification {
    login: String,
    hash: String,
    passcode: String,
    print: Fingerprint,
    memory_bytes: usize,
    /// An unknown login's check against the dummy hash: never matches.
    dummy: bool,
}

impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the passcode.
        f.debug_struct("Verification").field("login", &self.login).finish_non_exhaustive()
    }
}

impl Verification {
    fn new(login: &str, hash: &str, passcode: &str) -> Verification {
        Verification {
            login: login.to_string(),
            hash: hash.to_string(),
            passcode: passcode.to_string(),
            print: fingerprint(login, passcode),
            memory_bytes: hash_memory_bytes(hash),
            dummy: false,
        }
    }

    /// The BLAKE2s digest of login and passcode: equal for two CONNECTs asking the same
    /// question, so they can share one run.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.print
    }

    /// Bytes Argon2 allocates for this run: the hash's `m` parameter (KiB) × 1024.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Bytes this check holds while it waits (the login, hash and passcode it copied).
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.login.capacity() + self.hash.capacity() + self.passcode.capacity()
    }

    /// Runs Argon2 with the hash's own parameters; true when the passcode matches. CPU-bound
    /// (about 0.1 s and [`Verification::memory_bytes`] with the defaults): never on the event
    /// loop.
    pub fn run(&self) -> bool {
        // A dummy check does the whole run too (that is its point), then fails.
        let matched = PasswordHash::new(&self.hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(self.passcode.as_bytes(), &parsed).is_ok());
        matched && !self.dummy
    }
}

/// The memory an Argon2 run over `hash` allocates, in bytes (its `m` parameter is in KiB); the
/// default parameters' 19 MiB when the string does not say. `Config::finish` checks the
/// largest configured one against `limits.memory_budget_bytes`.
pub fn hash_memory_bytes(hash: &str) -> usize {
    PasswordHash::new(hash)
        .ok()
        .and_then(|parsed| argon2::Params::try_from(&parsed).ok())
        .map_or(argon2::Params::DEFAULT_M_COST, |p| p.m_cost()) as usize
        * 1024
}

/// Checks that a configured `$argon2…` passcode is a PHC string this server can verify.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not an Argon2 PHC string ({e})"))?;
    argon2::Params::try_from(&parsed).map_err(|e| format!("unusable Argon2 parameters ({e})"))?;
    Ok(())
}

/// The Argon2id hash (PHC string, default parameters: 19 MiB, 2 passes, 1 lane; a fresh
/// random salt) of `passcode`, for `auth.users = ["login:HASH"]`. An empty passcode is refused
/// (its hash would let anyone in who sends the login alone).
pub fn hash_passcode(passcode: &str) -> Result<String, String> {
    if passcode.is_empty() {
        return Err("refusing to hash an empty passcode: give the account a real one".to_string());
    }
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
        assert!(Authenticator::new(vec![]).check_now(None, None));
        let a = Authenticator::new(vec![("alice".into(), "secret".into())]);
        assert!(a.check_now(Some("alice"), Some("secret")));
        assert!(!a.check_now(Some("alice"), Some("secre")));
        assert!(!a.check_now(Some("alice"), Some("secretx")));
        assert!(!a.check_now(Some("bob"), Some("secret")));
        assert!(!a.check_now(None, None));
        assert!(!a.check_now(Some("alice"), None));
    }

    #[test]
    fn lengths_that_differ_by_a_multiple_of_65536_do_not_match() {
        // The old compare folded the length difference into 16 bits: an empty configured
        // passcode matched any passcode of 65,536 bytes.
        let a = Authenticator::new(vec![("alice".into(), String::new())]);
        assert!(a.check_now(Some("alice"), Some("")));
        for len in [256, 65_536, 131_072] {
            assert!(!a.check_now(Some("alice"), Some(&"x".repeat(len))), "{len}");
        }
        let a = Authenticator::new(vec![("alice".into(), "s".into())]);
        assert!(!a.check_now(Some("alice"), Some(&format!("s{}", "\0".repeat(65_536)))));
    }

    #[test]
    fn unknown_logins_cost_a_hash_of_the_same_parameters_and_never_match() {
        let hash = hash_passcode("s3cret").unwrap();
        let a = Authenticator::new(vec![("alice".into(), hash.clone()), ("bob".into(), "plain".into())]);
        let dummy = match a.check(Some("mallory"), Some("s3cret")) {
            Check::Verify(v) => v,
            other => panic!("an unknown login is checked like a hashed one, not {other:?}"),
        };
        assert_eq!(dummy.hash, hash, "the configured hash's parameters");
        assert!(!dummy.run(), "even the hashed account's passcode does not let an unknown login in");
        assert!(a.remember(&dummy, false));
        assert!(matches!(a.check(Some("mallory"), Some("s3cret")), Check::Refused), "remembered");
        assert!(!a.check_now(Some("mallory"), Some("other")));
        // A known plain login is a compare, as before; without hashed accounts nothing is hashed.
        assert!(matches!(a.check(Some("bob"), Some("wrong")), Check::Refused));
        let plain = Authenticator::new(vec![("bob".into(), "plain".into())]);
        assert!(matches!(plain.check(Some("mallory"), Some("x")), Check::Refused));
        assert!(hash_passcode("").is_err());
    }

    #[test]
    fn hashed_passcodes_verify_and_are_remembered() {
        let hash = hash_passcode("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(check_hash(&hash).is_ok());
        assert_ne!(hash, hash_passcode("s3cret").unwrap(), "a fresh salt each time");
        let a = Authenticator::new(vec![("alice".into(), hash), ("bob".into(), "plain".into())]);
        assert!(!a.check_now(Some("alice"), Some("wrong")));
        assert!(a.verified.borrow()[0].is_none());
        assert_eq!(a.failed.borrow().len(), 1);
        assert!(!a.check_now(Some("alice"), Some("wrong")));
        assert_eq!(a.failed.borrow().len(), 1, "a remembered failure is not hashed again");
        assert!(a.check_now(Some("alice"), Some("s3cret")));
        assert_eq!(a.verified.borrow()[0], Some(fingerprint("alice", "s3cret")));
        assert!(a.check_now(Some("alice"), Some("s3cret")));
        assert!(!a.check_now(Some("alice"), Some("s3cre")));
        assert!(!a.check_now(Some("bob"), Some("s3cret")));
        assert!(a.check_now(Some("bob"), Some("plain")));
        // The hash text itself is not a passcode.
        let hash = hash_passcode("x").unwrap();
        assert!(!Authenticator::new(vec![("c".into(), hash.clone())]).check_now(Some("c"), Some(&hash)));
        assert!(check_hash("$argon2id$nonsense").is_err());
        // An outcome checked against a hash a reload has since replaced is not kept.
        let old = match a.check(Some("alice"), Some("s3cret2")) {
            Check::Verify(v) => v,
            other => panic!("{other:?}"),
        };
        let reloaded = Authenticator::new(vec![("alice".into(), hash_passcode("other").unwrap())]);
        assert!(!reloaded.remember(&old, true));
        assert!(matches!(reloaded.check(Some("alice"), Some("s3cret2")), Check::Verify(_)));
        assert!(a.remember(&old, false));
        // The failure memory is bounded.
        a.failed.borrow_mut().clear();
        a.failed.borrow_mut().extend((0..REMEMBERED_FAILURES).map(|i| fingerprint("alice", &i.to_string())));
        assert!(!a.check_now(Some("alice"), Some("another wrong one")));
        assert_eq!(a.failed.borrow().len(), REMEMBERED_FAILURES);
    }
}
