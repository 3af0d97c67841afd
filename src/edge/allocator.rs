//! Memory goes back to the board after a crowd leaves or a burst ends (issue 13, item 4),
//! however the server was started.
//!
//! glibc's allocator keeps what the program frees: in per-size caches (tcache, fastbins), in
//! holes inside its heap, and at the heap's top below a trim threshold that grows with every
//! large free. After 100 unfinished 256 KiB SockJS bodies the process kept 32.8 MiB for good
//! (4.9 MiB idle). glibc reads its settings once, from `GLIBC_TUNABLES`, before `main`; the only
//! in-process calls that change them (`mallopt`, `malloc_trim`) are C functions this crate
//! cannot call without `unsafe`. So the binary starts itself again (same PID, same arguments,
//! same environment, through `execve`) with [`TUNABLES`] set, unless the environment already
//! has a `GLIBC_TUNABLES` (the operator's word wins) or `limits.return_freed_memory = false`.
//!
//! With [`TUNABLES`]: chunks of 16 KiB and more are `mmap`'d and unmapped on free (large
//! frames, request bodies, grown queues), small chunks coalesce at once (no tcache or fastbins),
//! and the heap top is trimmed on every free. Measured with `scripts/bench/hostile.py --quick`
//! (5 s after each scenario, RSS against idle): bodies 8.0 vs 4.9 MiB instead of 32.8, 760
//! silent sockets 7.8 vs 4.7 instead of 13.6, the overload 5.2 vs 4.8 instead of 7.5. A
//! 4 KiB threshold returns a little more but puts every socket read buffer on `mmap` (a system
//! call and a page fault per read); 16 KiB keeps those on the heap.

use std::ffi::OsStr;

/// The allocator settings the server runs with (glibc tunables syntax).
pub const TUNABLES: &str = "glibc.malloc.mmap_threshold=16384:glibc.malloc.trim_threshold=0:\
                            glibc.malloc.top_pad=0:glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0";

/// What [`tune`] found when it did not start the process again (a successful restart never
/// returns: the new image runs `main` from the start).
#[derive(Debug)]
pub enum Tuning {
    /// The process runs with [`TUNABLES`] (it was started again with them, or given them).
    Tuned,
    /// The environment set other `GLIBC_TUNABLES`: they are left as they are.
    Operator(String),
    /// `limits.return_freed_memory = false`.
    Disabled,
    /// Not a glibc build (musl, other systems): nothing to set.
    Unsupported,
    /// Starting again failed (`execve`'s error); the process goes on with glibc's defaults.
    Failed(std::io::Error),
}

/// Starts the binary again with [`TUNABLES`] when it runs on glibc without them and `enabled`
/// (`limits.return_freed_memory`); otherwise says why not. Call first thing in `main`, before
/// threads or sockets exist: `execve` replaces the process image (open descriptors without
/// `O_CLOEXEC` would survive it).
pub fn tune(enabled: bool) -> Tuning {
    let current = std::env::var_os("GLIBC_TUNABLES");
    match decide(cfg!(target_env = "gnu"), enabled, current.as_deref()) {
        Decision::Restart => Tuning::Failed(restart()),
        Decision::Stay(tuning) => tuning,
    }
}

/// What [`tune`] does, decided from its inputs alone.
#[derive(Debug)]
enum Decision {
    Restart,
    Stay(Tuning),
}

fn decide(glibc: bool, enabled: bool, current: Option<&OsStr>) -> Decision {
    match current {
        Some(value) if value == TUNABLES => Decision::Stay(Tuning::Tuned),
        // Set at all, even to something else or to nothing: the operator decided (and a
        // started-again process that somehow lost its settings cannot loop).
        Some(value) => Decision::Stay(Tuning::Operator(value.to_string_lossy().into_owned())),
        None if !glibc => Decision::Stay(Tuning::Unsupported),
        None if !enabled => Decision::Stay(Tuning::Disabled),
        None => Decision::Restart,
    }
}

/// `execve`s the running binary with the same arguments and `GLIBC_TUNABLES` set; returns only
/// its error.
///
/// It first runs `BINARY --version` with the settings and starts again only if that printed
/// the version: `exec` replaces the process for good, and where the binary cannot start itself
/// (under `qemu-user` without `binfmt_misc`, the host rejects the foreign ELF and glibc's
/// `execvp` then hands the file to `/bin/sh`) the process would be lost instead of going on.
fn restart() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    let probe = Command::new(&exe)
        .arg("--version")
        .env("GLIBC_TUNABLES", TUNABLES)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match probe {
        Ok(out) if out.status.success() && out.stdout.starts_with(b"stomp-edge ") => {}
        Ok(out) => {
            return std::io::Error::other(format!(
                "{} cannot start itself here ({}; an emulator?)",
                exe.display(),
                out.status
            ))
        }
        Err(e) => return e,
    }
    let mut args = std::env::args_os();
    let mut command = Command::new(exe);
    if let Some(argv0) = args.next() {
        command.arg0(argv0);
    }
    command.args(args).env("GLIBC_TUNABLES", TUNABLES).exec()
}

impl Tuning {
    /// Logs what was decided (once the logger runs, after the start again).
    pub fn log(&self) {
        match self {
            Tuning::Tuned => log::debug!("allocator: freed memory goes back (GLIBC_TUNABLES={TUNABLES})"),
            Tuning::Operator(value) => {
                log::info!("allocator: GLIBC_TUNABLES={value} from the environment is used as it is")
            }
            Tuning::Disabled => {
                log::info!("allocator: limits.return_freed_memory = false, glibc keeps what is freed")
            }
            Tuning::Unsupported => log::debug!("allocator: not glibc, its own defaults apply"),
            Tuning::Failed(e) => log::warn!(
                "allocator: could not start again with GLIBC_TUNABLES ({e}); freed memory may stay held"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_only_on_glibc_when_enabled_and_unset() {
        assert!(matches!(decide(true, true, None), Decision::Restart));
        assert!(matches!(decide(true, false, None), Decision::Stay(Tuning::Disabled)));
        assert!(matches!(decide(false, true, None), Decision::Stay(Tuning::Unsupported)));
        assert!(matches!(decide(true, true, Some(OsStr::new(TUNABLES))), Decision::Stay(Tuning::Tuned)));
    }

    #[test]
    fn any_value_already_set_is_left_alone_so_it_cannot_loop() {
        for value in ["glibc.malloc.arena_max=1", ""] {
            match decide(true, true, Some(OsStr::new(value))) {
                Decision::Stay(Tuning::Operator(v)) => assert_eq!(v, value),
                other => panic!("{value:?}: {other:?}"),
            }
        }
    }
}
