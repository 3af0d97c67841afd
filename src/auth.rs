//! Checks CONNECT credentials against the configured users. With no users configured every
//! client is let in anonymously (the embedded default).

/// The configured accounts.
pub struct Authenticator {
    users: Vec<(String, String)>,
}

impl Authenticator {
    pub fn new(users: Vec<(String, String)>) -> Authenticator {
        Authenticator { users }
    }

    pub fn anonymous_allowed(&self) -> bool {
        self.users.is_empty()
    }

    /// True when the login and passcode match an account, or when anonymous access is on.
    pub fn check(&self, login: Option<&str>, passcode: Option<&str>) -> bool {
        if self.anonymous_allowed() {
            return true;
        }
        let (Some(login), Some(passcode)) = (login, passcode) else { return false };
        // Compare every entry in full so the time taken does not reveal which part matched.
        let mut ok = false;
        for (user, pass) in &self.users {
            ok |= constant_time_eq(user.as_bytes(), login.as_bytes())
                & constant_time_eq(pass.as_bytes(), passcode.as_bytes());
        }
        ok
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
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
}
