//! The configuration's unit tests: the default file, every layer (file, environment,
//! flags), the readers' errors and the reload rules.

use super::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    match Config::from_args_and_env(args.iter().map(|s| s.to_string()), &env)? {
        Action::Run(c) => Ok(*c),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn embedded_file_sets_every_default() {
    let c = Config::embedded();
    assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.redis_url, None);
    assert_eq!(c.stomp.heartbeat_send_ms, 10_000);
    assert_eq!(c.limits.max_frame_bytes, 131_072);
    assert_eq!(c.limits.max_headers, 32);
    assert!(c.auth.users.is_empty());
    assert!(c.websocket.allowed_origins.is_empty());
    assert_eq!(c.chat.max_room_id_chars, 64);
    assert_eq!(c.stomp.server_owned_prefixes, vec!["/topic/room/".to_string()]);
    assert_eq!(c.stomp.server_owned("/topic/room/lobby"), Some("/topic/room/"));
    assert_eq!(c.stomp.server_owned("/topic/roomy"), None);
    assert!(!c.chat.free_usernames);
    // Every field was set by the file, none left at the blank zero.
    assert!(c.limits.max_outbound_bytes > 0 && c.stomp.max_transaction_frames > 0 && c.chat.max_rooms > 0);
}

#[test]
fn precedence_file_env_flags() {
    let dir = std::env::temp_dir().join(format!("stomp-edge-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:1000\"\n[limits]\nmax_connections = 5\n[auth]\nusers = [\"alice:secret\"]\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let c = run(&["--config", p], &[]).unwrap();
    assert_eq!(c.listen.port(), 1000);
    assert_eq!(c.limits.max_connections, 5);
    assert_eq!(c.auth.users, vec![("alice".to_string(), "secret".to_string())]);
    let c = run(
        &["--config", p],
        &[("STOMP_EDGE_LISTEN", "127.0.0.1:2000"), ("STOMP_EDGE_LIMITS_MAX_CONNECTIONS", "7")],
    )
    .unwrap();
    assert_eq!((c.listen.port(), c.limits.max_connections), (2000, 7));
    let c =
        run(&["--config", p, "--listen=127.0.0.1:3000"], &[("STOMP_EDGE_LISTEN", "127.0.0.1:2000")]).unwrap();
    assert_eq!(c.listen.port(), 3000);
    // The shipped file with keys changed: the changed ones apply (however written), those
    // written as shipped are their defaults, and a bad change is still refused at its line.
    let edited = DEFAULT_FILE
        .replace("\nmax_connections = 10000\n", "\nmax_connections = 5000\n")
        .replace("\nheartbeat_ms = 3000\n", "\nheartbeat_ms = 3_000\n")
        .replace("\nlog_level = \"info\"\n", "\nlog_level = 'debug'\n");
    let c = Config::from_file_text(&edited, "e").unwrap();
    let mut expected = Config::embedded().with_server_id(&c.server_id);
    expected.limits.max_connections = 5000;
    expected.log_level = log::LevelFilter::Debug;
    assert_eq!(c, expected);
    assert_eq!(c, Config::from_file_text_in_full(&edited, "e").unwrap());
    let bad = DEFAULT_FILE.replace("\nmax_connections = 10000\n", "\nmax_connections = 0\n");
    let line = DEFAULT_FILE[..DEFAULT_FILE.find("\nmax_connections = ").unwrap()].lines().count() + 1;
    assert_eq!(
        Config::from_file_text(&bad, "e").unwrap_err(),
        format!("e: line {line}: `limits.max_connections` must be between 1 and 1000000, not 0")
    );
    // The file as the packages install it is the defaults; what is set over it still applies.
    let shipped = dir.join("shipped.toml");
    std::fs::write(&shipped, DEFAULT_FILE).unwrap();
    let s = shipped.to_str().unwrap();
    assert_eq!(run(&["--config", s], &[]).unwrap().with_server_id(""), Config::embedded());
    let c =
        run(&["--config", s, "--listen", "127.0.0.1:4000"], &[("STOMP_EDGE_LIMITS_MAX_CONNECTIONS", "9")])
            .unwrap();
    assert_eq!((c.listen.port(), c.limits.max_connections), (4000, 9));
    let c = run(&["--redis", "redis://127.0.0.1:6379", "--server-id", "n1"], &[]).unwrap();
    assert_eq!((c.redis_url.as_deref(), c.server_id.as_str()), (Some("redis://127.0.0.1:6379"), "n1"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sentinel_urls_and_credentials_from_file_environment_and_flag() {
    let url = "redis-sentinel://:pw@10.0.0.2:26379,10.0.0.3:26379/0#mymaster";
    let text = format!("redis_url = \"{url}\"\n[cluster]\nsentinel_username = \"watcher\"\n");
    let c = Config::from_file_text(&text, "f").unwrap();
    assert_eq!((c.redis_url.as_deref(), c.cluster.sentinel_username.as_str()), (Some(url), "watcher"));
    let c = run(&[], &[("STOMP_EDGE_REDIS_URL", url), ("STOMP_EDGE_CLUSTER_SENTINEL_PASSWORD", "s3cret")])
        .unwrap();
    assert_eq!((c.redis_url.as_deref(), c.cluster.sentinel_password.as_str()), (Some(url), "s3cret"));
    let c = run(&["--redis", url], &[]).unwrap();
    assert_eq!(c.redis_url.as_deref(), Some(url));
    assert!(run(&["--redis", "redis-sentinel://h:1"], &[]).unwrap_err().contains("master name"));
}

#[test]
fn errors_name_the_key_and_line() {
    let err = |text: &str| Config::from_file_text(text, "f").unwrap_err();
    assert_eq!(
        err("[limits]\nmax_frame_bytes = 1\n"),
        "f: line 2: `limits.max_frame_bytes` must be between 256 and 67108864, not 1"
    );
    assert_eq!(err("\nnonsense = 1\n"), "f: line 2: unknown key `nonsense`");
    assert_eq!(err("[limits]\n\nnope = 1\n"), "f: line 3: unknown key `limits.nope`");
    assert_eq!(err("[limit]\nmax_connections = 1\n"), "f: line 1: unknown key `limit`");
    assert!(err("[limits]\nmax_headers = 1000\n").contains("between 1 and 64"));
    assert_eq!(
        err("[limits]\nmax_connections = \"many\"\n"),
        "f: line 2: `limits.max_connections`: invalid type: string \"many\", expected usize"
    );
    assert!(err("log_level = \"loud\"\n").starts_with("f: line 1: `log_level`"));
    assert!(err("listen = \"nowhere\"\n").starts_with("f: line 1: `listen`"));
    assert!(err("[auth]\nusers = [\n\"a:b\",\n\"nopass\"]\n").contains("login:passcode"));
    // Accounts that would let in what their owner did not mean to.
    assert!(err("[auth]\nusers = [\"dave:\"]\n").contains("passcode of \"dave\" is empty"));
    assert!(err("[auth]\nusers = [\"guest:a\", \"guest:b\"]\n").contains("\"guest\" is listed twice"));
    let bcrypt = err("[auth]\nusers = ['x:$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW']\n");
    assert!(bcrypt.contains("\"2b\" password hash"), "{bcrypt}");
    assert!(err("redis_url = \"http://x\"\n").contains("redis://"));
    assert!(err("redis_url = \"redis-sentinel://h1,h2\"\n").contains("master name"));
    assert!(err("[cluster]\nsentinel_password = \"a\\nb\"\n").contains("cluster.sentinel_password"));
    assert!(err("[stomp]\nserver_owned_prefixes = [\"topic\"]\n").contains("stomp.server_owned_prefixes"));
    assert!(err("[cluster]\nadvertise_url = \"board:8080\"\n").contains("cluster.advertise_url"));
    assert!(
        err("[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n").starts_with("f: line 2: `http.trusted_proxies`")
    );
    assert!(err("[http]\nmetrics_open_to = [\"lan\"]\n").contains("`http.metrics_open_to`"));
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let small = err(&format!("[limits]\nmemory_budget_bytes = 16777216\n[auth]\nusers = ['a:{hash}']\n"));
    assert!(small.contains("limits.memory_budget_bytes") && small.contains("auth.users"), "{small}");
    let fits = format!("[limits]\nmemory_budget_bytes = 33554432\n[auth]\nusers = ['a:{hash}']\n");
    assert!(Config::from_file_text(&fits, "f").is_ok());
    let c = Config::from_file_text("[cluster]\nadvertise_url = \"http://10.0.0.7:8080/\"\n", "f").unwrap();
    assert_eq!(c.cluster.advertise_url, "http://10.0.0.7:8080");
    assert!(err("[limits]\nmax_connections = -1\n").starts_with("f: line 2: `limits.max_connections`"));
    assert!(err("[sockjs]\nenabled = 1\n").starts_with("f: line 2: `sockjs.enabled`"));
    assert!(err("limits = 5\n").starts_with("f: line 1: `limits`"));
    // A section is a table: an array would fill its keys by position (found by a break pass
    // of 4b68b84: `sockjs = [false]` turned SockJS off), so any array is refused, short or long.
    for text in
        ["sockjs = [false]\n", "\n\nlimits = [0]\n", "limits = []\n", "status = [false, true, \"junk\", 5]\n"]
    {
        let e = err(text);
        assert!(e.contains("must be a table"), "{text:?}: {e}");
    }
    assert_eq!(err("\n\nlimits = [0]\n"), "f: line 3: `limits` must be a table (`[limits]`)");
    assert!(Config::from_file_text("limits = { max_connections = 5 }\n", "f").is_ok());
    // A TOML syntax error names the line too.
    assert!(err("a = 1\nb =\n").starts_with("f: line 2:"));
    assert!(err("[limits]\nmax_connections = 1\n[limits]\n").starts_with("f: line 3:"));
    assert!(run(&["--bogus"], &[]).unwrap_err().contains("--bogus"));
    // Found by a break pass: a flag took the next flag as its value, and `=x` was ignored.
    assert!(run(&["--server-id", "--log-level", "debug"], &[])
        .unwrap_err()
        .contains("--server-id needs a value"));
    assert_eq!(run(&["--server-id=--odd"], &[]).unwrap().server_id, "--odd");
    let env: Vec<(String, String)> = Vec::new();
    assert!(Config::from_args_and_env(["--print-config=x".to_string()], &env)
        .unwrap_err()
        .contains("takes no value"));
    assert!(run(&[], &[("STOMP_EDGE_LIMITS_NOPE", "1")]).unwrap_err().contains("STOMP_EDGE_LIMITS_NOPE"));
    assert!(run(&["--listen"], &[]).unwrap_err().contains("needs a value"));
    assert_eq!(
        run(&[], &[("STOMP_EDGE_LIMITS_MAX_HEADERS", "65")]).unwrap_err(),
        "environment STOMP_EDGE_LIMITS_MAX_HEADERS: `limits.max_headers` must be between 1 and 64, not 65"
    );
    assert!(run(&[], &[("STOMP_EDGE_SOCKJS_ENABLED", "maybe")])
        .unwrap_err()
        .starts_with("environment STOMP_EDGE_SOCKJS_ENABLED: `sockjs.enabled`"));
    assert!(run(&["--log-level", "loud"], &[]).unwrap_err().starts_with("--log-level: `log_level`"));
}

#[test]
fn any_toml_spelling_is_read() {
    // Each of these stopped start-up with the hand-written reader.
    let text = "listen = '127.0.0.1:9000'\n\
                chat = { max_rooms = 7, max_message_bytes = 0x400 }\n\
                limits.max_connections = 1_000\n\
                [auth]\n\
                users = [\n  'guest:guest', # the LAN default\n  \"\"\"al:ice\"\"\",\n]\n\
                [websocket]\n\
                allowed_origins = [ 'http://a:8080',\n 'http://b' ]\n";
    let c = Config::from_file_text(text, "f").unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!((c.chat.max_rooms, c.chat.max_message_bytes), (7, 1024));
    assert_eq!(c.chat.max_participants_per_room, Config::embedded().chat.max_participants_per_room);
    assert_eq!(c.limits.max_connections, 1000);
    assert_eq!(
        c.auth.users,
        vec![("guest".to_string(), "guest".to_string()), ("al".to_string(), "ice".to_string())]
    );
    assert_eq!(c.websocket.allowed_origins, vec!["http://a:8080", "http://b"]);
    // A `[section]` header for a section is the same as the inline table.
    let c = Config::from_file_text("[chat]\nmax_rooms = 7\n", "f").unwrap();
    assert_eq!(c.chat.max_rooms, 7);
}

#[test]
fn environment_values_as_bare_words_or_toml() {
    let c = run(
        &[],
        &[
            ("STOMP_EDGE_WEBSOCKET_ALLOWED_ORIGINS", "http://a, http://b"),
            ("STOMP_EDGE_AUTH_USERS", "['x:y']"),
            ("STOMP_EDGE_SOCKJS_ENABLED", "0"),
            ("STOMP_EDGE_CLUSTER_KEY_PREFIX", "'edge:'"),
            ("STOMP_EDGE_LOG_LEVEL", "debug"),
        ],
    )
    .unwrap();
    assert_eq!(c.websocket.allowed_origins, vec!["http://a", "http://b"]);
    assert_eq!(c.auth.users, vec![("x".to_string(), "y".to_string())]);
    assert!(!c.sockjs.enabled);
    assert_eq!(c.cluster.key_prefix, "edge:");
    assert_eq!(c.log_level, log::LevelFilter::Debug);
}

#[test]
fn every_key_is_in_the_default_file_with_its_environment_variable() {
    // The file documents the declared defaults: every declared key is in it (by count and by
    // name), it declares nothing else (an unknown key is an error), and every value it sets is
    // the declared default.
    let c = Config::embedded();
    let from_file = Config::from_file_text_in_full(DEFAULT_FILE, "config/stomp-edge.toml").unwrap();
    assert_eq!(from_file.with_server_id(""), c, "config/stomp-edge.toml differs from the declared defaults");
    let keys = Config::keys();
    assert_eq!(keys.len(), DEFAULT_FILE.lines().filter(|l| !l.starts_with('#') && l.contains(" = ")).count());
    for key in &keys {
        let name = key.path.rsplit('.').next().unwrap();
        assert!(DEFAULT_FILE.contains(&format!("\n{name} = ")), "{} not in the default file", key.path);
    }
    assert!(keys.iter().any(|k| k.env_var() == "STOMP_EDGE_LIMITS_MAX_CONNECTIONS"));
    assert!(keys.iter().any(|k| k.env_var() == "STOMP_EDGE_REDIS_URL"));
    // One key is found without listing the others; sections and unknown paths are no keys.
    for key in &keys {
        assert_eq!(Config::find(&key.path).as_ref(), Some(key));
    }
    assert_eq!(Config::find("limits"), None);
    assert_eq!(Config::find("limits.nope"), None);
    assert_eq!(Config::find("nope.max_connections"), None);
    assert!(Config::is_section("limits") && !Config::is_section("listen"));
    assert_eq!(c, Config::from_file_text("", "empty").unwrap().with_server_id(""));
}

#[test]
fn reload_applies_live_keys_and_keeps_restart_keys() {
    let running = Config::embedded();
    let new = Config::from_file_text(
        "listen = '127.0.0.1:1'\nlog_level = 'debug'\n[limits]\nmax_connections = 3\nmax_destinations = 5\n\
         [chat]\nmax_rooms = 2\nmax_message_bytes = 10\n[cluster]\nheartbeat_ms = 1000\n",
        "f",
    )
    .unwrap()
    .with_server_id(&running.server_id);
    let (applied, changed) = running.reloaded(new);
    let names: Vec<(&str, Reload)> = changed.iter().map(|k| (k.path.as_str(), k.reload)).collect();
    assert_eq!(
        names,
        vec![
            ("listen", Reload::Restart),
            ("log_level", Reload::Live),
            ("limits.max_connections", Reload::Live),
            ("limits.max_destinations", Reload::Live),
            ("chat.max_rooms", Reload::Live),
            ("chat.max_message_bytes", Reload::Live),
            ("cluster.heartbeat_ms", Reload::Restart),
        ]
    );
    assert_eq!(applied.listen, running.listen);
    assert_eq!(applied.log_level, log::LevelFilter::Debug);
    assert_eq!(applied.limits.max_connections, 3);
    assert_eq!(applied.limits.max_destinations, 5);
    assert_eq!((applied.chat.max_rooms, applied.chat.max_message_bytes), (2, 10));
    assert_eq!(applied.cluster, running.cluster);
}

#[test]
fn help_and_print_config() {
    let r = Config::from_args_and_env(["--help".to_string()], &[]).unwrap();
    assert_eq!(r, Action::PrintHelp);
    assert!(help_text().contains("--redis URL"));
    let r = Config::from_args_and_env(["--print-config".to_string()], &[]).unwrap();
    assert_eq!(r, Action::PrintConfig);
}
