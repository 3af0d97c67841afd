//! What a CONNECT with a hashed passcode costs (no harness): one Argon2id verification with the
//! `--hash-passcode` parameters (run off the event loop, on the blocking pool, by
//! `login_check`), the event-loop part of a CONNECT that needs one (deciding that it does),
//! a CONNECT whose passcode verified before (remembered for the process lifetime), a wrong
//! passcode (new, and retried), and a plain passcode, then the CPU 1000 clients of one account
//! and of 1000 accounts would take to reconnect at once. Run with
//! `cargo bench --bench passcode`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use stomp_edge::auth::{hash_passcode, Authenticator, Check};

/// The check with its Argon2 run (if any) done here, as the login queue would.
fn check(a: &Authenticator, login: &str, passcode: &str) -> bool {
    match a.check(Some(login), Some(passcode)) {
        Check::Allowed => true,
        Check::Refused => false,
        Check::Verify(v) => {
            let ok = v.run();
            a.remember(&v, ok) && ok
        }
    }
}

fn time(n: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

fn main() {
    let hash = hash_passcode("s3cret").expect("hash");
    println!("hash: {hash}");
    // A fresh Authenticator per round: nothing remembered, every check runs Argon2.
    let first = time(10, || {
        let a = Authenticator::new(vec![("alice".into(), hash.clone())]);
        assert!(black_box(check(&a, "alice", "s3cret")));
    });
    let a = Authenticator::new(vec![("alice".into(), hash.clone())]);
    let on_the_loop = time(10_000, || {
        assert!(matches!(black_box(a.check(Some("alice"), Some("s3cret"))), Check::Verify(_)));
    });
    assert!(check(&a, "alice", "s3cret"));
    let remembered = time(100_000, || assert!(black_box(check(&a, "alice", "s3cret"))));
    let mut n = 0;
    let wrong = time(10, || {
        n += 1;
        assert!(!black_box(check(&a, "alice", &format!("wrong {n}"))));
    });
    let wrong_again = time(100_000, || assert!(!black_box(check(&a, "alice", "wrong 1"))));
    let plain = Authenticator::new(vec![("alice".into(), "s3cret".into())]);
    let plain = time(100_000, || assert!(black_box(check(&plain, "alice", "s3cret"))));
    println!("CONNECT check, hashed passcode, first time:       {:>10.2?}", first);
    println!("  of which on the event loop (the rest is Argon2 on the blocking pool): {on_the_loop:.2?}");
    println!("CONNECT check, hashed passcode, remembered:       {:>10.2?}", remembered);
    println!("CONNECT check, hashed passcode, wrong passcode:   {:>10.2?}", wrong);
    println!("CONNECT check, hashed passcode, same wrong again: {:>10.2?}", wrong_again);
    println!("CONNECT check, plain passcode:                    {:>10.2?}", plain);
    println!("1000 clients of one account reconnecting:         {:>10.2?}", first + remembered * 999);
    println!("1000 clients of 1000 hashed accounts reconnecting: {:>10.2?}", first * 1000);
}
