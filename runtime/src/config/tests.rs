use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "TOKEN" => Some("s3cr3t".into()),
        "DIR" => Some("/data".into()),
        _ => None,
    }
}

const GOOD: &str = r#"
[queue]
path = "${DIR}/queue"

[server]
listen = "127.0.0.1:9000"
token = "${TOKEN}"

[destinations.lake]
type = "s3"
url = "file:///tmp/lake"
concurrency = 2

[destinations.lake.batch]
max_events = 100
max_age = "5s"

[destinations.lake.retry]
max_attempts = 3
"#;

#[test]
fn parses_sections_and_interpolates() {
    let config = Config::from_toml_with_env(GOOD, env).unwrap();
    assert_eq!(config.queue.path, PathBuf::from("/data/queue"));
    assert_eq!(config.server.token.as_ref().unwrap().expose(), "s3cr3t");
    let lake = &config.destinations["lake"];
    assert_eq!(lake.kind, "s3");
    assert_eq!(lake.settings.concurrency, Some(2));
    assert_eq!(lake.settings.batch.max_events, Some(100));
    assert_eq!(lake.settings.batch.max_age, Some(Duration::from_secs(5)));
    assert_eq!(lake.settings.retry.max_attempts, 3);
    assert_eq!(
        lake.options.get("url").unwrap().as_str(),
        Some("file:///tmp/lake")
    );
    assert!(!format!("{config:?}").contains("s3cr3t"));
}

#[test]
fn unknown_keys_name_the_key_and_line() {
    let text = GOOD.replace("max_events = 100", "max_event = 100");
    let err = Config::from_toml_with_env(&text, env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_event"), "{err}");
    assert!(err.contains("line 15"), "{err}");

    let text = GOOD.replace("listen =", "listn =");
    let err = Config::from_toml_with_env(&text, env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("listn") && err.contains("line 6"), "{err}");

    let text = format!("{GOOD}\n[queu]\npath = \"x\"\n");
    let err = Config::from_toml_with_env(&text, env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("queu") && err.contains("line 21"), "{err}");
}

#[test]
fn destination_option_errors_name_their_line() {
    let config = Config::from_toml_with_env(GOOD, env).unwrap();
    let lake = &config.destinations["lake"];
    let err = lake
        .error("lake", "unknown field `url`, expected `path`")
        .to_string();
    assert!(err.contains("line 11"), "{err}");
}

#[test]
fn missing_variables_are_named_without_values() {
    let text = GOOD.replace("${TOKEN}", "${NOPE}");
    let err = Config::from_toml_with_env(&text, env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("NOPE is not set"), "{err}");
    assert!(err.contains("server.token"), "{err}");
    assert!(err.contains("line 7"), "{err}");
}

#[test]
fn interpolation_rules() {
    assert_eq!(interpolate("a${DIR}b", &env).unwrap(), "a/datab");
    assert_eq!(
        interpolate("cost $5 and $${DIR}", &env).unwrap(),
        "cost $5 and ${DIR}"
    );
    assert!(interpolate("${DIR", &env).is_err());
    assert!(interpolate("${bad name}", &env).is_err());
}

#[test]
fn structural_errors() {
    let err = Config::from_toml_with_env("[queue]\n", env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no destination"), "{err}");
    let err = Config::from_toml_with_env("[destinations.x]\nurl = 1\n", env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no `type`"), "{err}");
    let err = Config::from_toml_with_env("[destinations.\"a b\"]\ntype = \"s3\"\n", env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be 1 to 64"), "{err}");
    let err = Config::from_toml_with_env("[destinations.x\n", env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn interpolated_values_never_appear_in_errors() {
    let text = GOOD.replace("[queue]\n", "[queue]\nwhen_full = \"${TOKEN}\"\n");
    let err = Config::from_toml_with_env(&text, env)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("s3cr3t"), "{err}");
    assert!(
        err.contains("REDACTED") && err.contains("when_full"),
        "{err}"
    );

    let config =
        Config::from_toml_with_env(&GOOD.replace("\"file:///tmp/lake\"", "\"${TOKEN}\""), env)
            .unwrap();
    let err = config.destinations["lake"]
        .error("lake", "invalid url s3cr3t")
        .to_string();
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn limits_are_checked() {
    let text = GOOD.replace("concurrency = 2", "concurrency = 9223372036854775807");
    let err = Config::from_toml_with_env(&text, env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("from 1 to 4096"), "{err}");
    let text = GOOD.replace("token = \"${TOKEN}\"", "token = \"\"");
    let err = Config::from_toml_with_env(&text, env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.token is empty"), "{err}");
}

#[test]
fn settings_that_could_never_work_are_refused() {
    let queue =
        |extra: &str| GOOD.replace("path = \"${DIR}/queue\"", &format!("path = \"q\"\n{extra}"));
    for cap in ["max_bytes = 0", "max_bytes = 100", "max_bytes = 1048576"] {
        let err = Config::from_toml_with_env(&queue(cap), env).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("queue.max_bytes"), "{text}");
        assert!(text.contains("at least 1114112"), "{text}");
        assert!(text.contains("line 4"), "{text}");
    }
    assert!(Config::from_toml_with_env(&queue("max_bytes = 1114112"), env).is_ok());
    // A smaller event limit allows a smaller queue.
    let small =
        queue("max_bytes = 70000").replace("[server]\n", "[server]\nmax_event_bytes = 1000\n");
    assert!(Config::from_toml_with_env(&small, env).is_ok());

    let text = GOOD.replace(
        "concurrency = 2",
        "concurrency = 2\nattempt_timeout = \"0s\"",
    );
    let err = Config::from_toml_with_env(&text, env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("attempt_timeout must be longer than 0s"),
        "{err}"
    );
}

#[test]
fn the_queue_part_loads_without_the_other_variables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = "[queue]\npath = \"q\"\n\n[server]\nlisten = \"${DEST_TEST_PART_LISTEN}\"\n\n\
                [destinations.lake]\ntype = \"s3\"\nconcurrency = \"${DEST_TEST_PART_C}\"\n";
    std::fs::write(&path, text).unwrap();
    assert!(Config::from_file(&path).is_err());
    let part = Config::queue_part_from_file(&path).unwrap();
    assert_eq!(part.queue.path, dir.path().join("q"));
    assert_eq!(part.destinations["lake"].kind, "s3");

    std::fs::write(&path, text.replace("\"q\"", "\"${DEST_TEST_PART_DIR}\"")).unwrap();
    let err = Config::queue_part_from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("queue.path") && err.contains("DEST_TEST_PART_DIR"),
        "{err}"
    );
    assert!(
        !err.contains("line"),
        "a line of the part would mislead: {err}"
    );
}
