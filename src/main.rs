//! The `stomp-edge` binary: reads the configuration, starts logging and runs the server.

use std::process::ExitCode;
use std::rc::Rc;

use stomp_edge::config::{self, Action, Config};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn load() -> Result<Action, String> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    Config::from_args_and_env(std::env::args().skip(1), &env)
}

/// `--hash-passcode`: prints the hash part of an `auth.users` entry (`"login:HASH"`).
fn hash_passcode(passcode: &str) -> ExitCode {
    let passcode = if passcode == "-" {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            eprintln!("stomp-edge: cannot read the passcode from standard input: {e}");
            return ExitCode::from(2);
        }
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        passcode.to_string()
    };
    match stomp_edge::auth::hash_passcode(&passcode) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stomp-edge: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let config = match load() {
        Ok(Action::Run(config)) => *config,
        Ok(Action::PrintHelp) => {
            print!("{}", config::help_text());
            return ExitCode::SUCCESS;
        }
        Ok(Action::PrintConfig) => {
            print!("{}", config::DEFAULT_FILE);
            return ExitCode::SUCCESS;
        }
        Ok(Action::HashPasscode(passcode)) => return hash_passcode(&passcode),
        Ok(Action::GenerateCert(dir)) => {
            return match stomp_edge::tls::generate::run(std::path::Path::new(&dir)) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("stomp-edge: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Ok(Action::PrintVersion) => {
            println!("stomp-edge {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("stomp-edge: {e}");
            return ExitCode::from(2);
        }
    };
    // Log to stderr (journald adds its own timestamps under systemd).
    if let Err(e) = simple_logger::SimpleLogger::new().with_level(config.log_level).init() {
        eprintln!("stomp-edge: cannot start logging: {e}");
    }
    let reload = Box::new(|| match load()? {
        Action::Run(config) => Ok(*config),
        _ => Err("unexpected arguments on reload".to_string()),
    });
    let hooks: Rc<dyn stomp_edge::transport::server::Hooks> =
        match stomp_edge::board::edge::SystemdHooks::from_env() {
            Some(systemd) => Rc::new(systemd),
            None => Rc::new(stomp_edge::transport::server::NoHooks),
        };
    match stomp_edge::run(config, hooks, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: through the log (stderr, so the journal) unless `log_level = "off"`.
            if log::log_enabled!(log::Level::Error) {
                log::error!("{e}");
            } else {
                eprintln!("stomp-edge: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
