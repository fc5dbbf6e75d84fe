//! Every example config in the repository parses and validates.

#[test]
fn every_example_config_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                if let Err(e) = sluice::config::load(&path) {
                    panic!("{e}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no example config found under {}", root.display());
}

#[test]
fn a_bad_config_reports_every_problem_with_its_key() {
    let text = r#"
        [[feature_set]]
        name = "Tx"
        entity = "user_id"
        timestamp = { field = "ts" }
        ttl = "3 weeks"
        fields = ["user_id", "ts", "amount"]
        source = { kind = "jetstream", stream = "A.B", subject = "s" }

        [[feature_set.steps]]
        id = "f"
        kind = "filter"
        expr = "amount > "

        [[feature_set.steps]]
        id = "f"
        kind = "map"
        fields = { d = "zz + 1" }

        [[feature_set.steps]]
        id = "w"
        kind = "wasm"
        plugin = "nope"
    "#;
    let config = sluice::config::parse_str(text, std::path::Path::new("bad.toml")).unwrap();
    let problems = sluice::config::validate(&config);
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "feature_set[0].name",
            "feature_set[0].ttl",
            "feature_set[0].source.stream",
            "feature_set[0].steps[0].expr",
            "feature_set[0].steps[1].id",
            "feature_set[0].steps[1].fields.d",
            "feature_set[0].steps[2].plugin",
        ]
    );
    assert!(problems[5]
        .message
        .contains("refers to field \"zz\", which no earlier step produces"));
    let unknown = sluice::config::parse_str("[host]\nnats_url = \"x\"\n", std::path::Path::new("u.toml")).unwrap_err();
    assert!(unknown.to_string().contains("unknown field `nats_url`"), "{unknown}");
    let step = "[[feature_set]]\nname='a'\nentity='u'\ntimestamp={field='t'}\nsource={kind='jetstream',stream='S',subject='s'}\n[[feature_set.steps]]\nid='x'\nkind='filter'\nexpr='true'\ncolour='red'\n";
    let unknown = sluice::config::parse_str(step, std::path::Path::new("u.toml")).unwrap_err();
    assert!(unknown.to_string().contains("colour"), "{unknown}");
}

#[test]
fn a_bad_aggregate_step_gets_one_clear_problem_per_mistake() {
    let text = r#"
        [[feature_set]]
        name = "tx"
        entity = "user_id"
        timestamp = { field = "ts" }
        allowed_lateness = "ten minutes"
        fields = ["user_id", "ts", "amount"]
        source = { kind = "jetstream", stream = "S", subject = "s" }

        [[feature_set.steps]]
        id = "agg"
        kind = "aggregate"
        period = "10m"

        [[feature_set.steps.aggregations]]
        field = "amount"
        functions = ["sum", "median", "p100", "avrage"]
        windows = ["1h", "25m"]
        names = { amount_total_1h = "x" }

        [[feature_set.steps.aggregations]]
        field = "amount"
        functions = ["count"]
        windows = ["1h"]

        [[feature_set.steps.aggregations]]
        field = "price"
        functions = ["max"]
        windows = ["1h"]

        [[feature_set.steps]]
        id = "z"
        kind = "map"
        fields = { share = "amount / amount_sum_1h", ratio = "amount_max_1h / 2.0" }
    "#;
    let config = sluice::config::parse_str(text, std::path::Path::new("bad.toml")).unwrap();
    let problems = sluice::config::validate(&config);
    let text: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
    let all = text.join("\n");
    for expected in [
        "steps[0].aggregations[2].field: refers to field \"price\"",
        "add a `kind = \"redis\"` target",
        "feature_set[0].allowed_lateness: \"ten minutes\": expected a duration",
        "unknown function \"p100\"",
        "unknown function \"avrage\"",
        "window \"25m\" is not a whole number of periods (10m)",
        "`names` renames \"amount_total_1h\", which this aggregation does not produce",
        "field \"amount\" is aggregated twice in this step",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    assert_eq!(
        problems.len(),
        8,
        "one problem per mistake, none for the map after it:\n{all}"
    );

    // Fixed, the map may use what the step produces.
    let fixed = text_fixed();
    let config = sluice::config::parse_str(&fixed, std::path::Path::new("ok.toml")).unwrap();
    assert_eq!(sluice::config::validate(&config), []);
}

fn text_fixed() -> String {
    r#"
        [[feature_set]]
        name = "tx"
        entity = "user_id"
        timestamp = { field = "ts" }
        allowed_lateness = "10m"
        fields = ["user_id", "ts", "amount"]
        source = { kind = "jetstream", stream = "S", subject = "s" }
        targets = [{ kind = "redis" }]

        [[feature_set.steps]]
        id = "agg"
        kind = "aggregate"
        period = "10m"
        aggregations = [{ field = "amount", functions = ["sum", "max", "p95"], windows = ["1h", "tumbling:1d", "since_start"] }]

        [[feature_set.steps]]
        id = "z"
        kind = "map"
        fields = { share = "amount / amount_sum_1h", ratio = "amount_max_1h / amount_p95_since_start" }
    "#
    .to_string()
}

#[test]
fn sluice_token_refuses_an_unknown_scope() {
    let cli =
        <sluice::cli::Cli as clap::Parser>::parse_from(["sluice", "token", "--name", "x", "--scopes", "read,root"]);
    assert_eq!(sluice::cli::run(cli).unwrap(), 1);
    let cli = <sluice::cli::Cli as clap::Parser>::parse_from(["sluice", "token", "--name", "x", "--scopes", "read"]);
    assert_eq!(sluice::cli::run(cli).unwrap(), 0);
}

#[test]
fn http_and_token_problems_are_reported_at_their_keys() {
    let text = r#"
        http = { bind = "localhost" }
        [[token]]
        name = "a"
        sha256 = "secret"
        scopes = []
        sets = ["missing"]
        [[token]]
        name = "a"
        sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
        scopes = ["read"]
        [[feature_vector]]
        name = "model"
        features = ["nowhere:x", "nocolon"]
    "#;
    let config = sluice::config::parse_str(text, std::path::Path::new("t.toml")).unwrap();
    let keys: Vec<String> = sluice::config::validate(&config).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "http.bind",
            "feature_vector[0].features",
            "feature_vector[0].features",
            "token[0].sha256",
            "token[0].scopes",
            "token[0].sets",
            "token[1].name"
        ]
    );
}

#[test]
fn join_problems_are_reported_at_their_keys() {
    let set = |name: &str, targets: &str, steps: &str| {
        format!(
            "[[feature_set]]\nname = \"{name}\"\nversion = 1\nentity = \"k\"\nfields = [\"k\", \"u\", \"ts\"]\n\
             timestamp = {{ field = \"ts\" }}\nsource = {{ kind = \"file\", path = \"x.jsonl\" }}\n{steps}{targets}"
        )
    };
    let join = |id: &str, other: &str, features: &str, key: &str| {
        format!("[[feature_set.steps]]\nid = \"{id}\"\nkind = \"join\"\nset = \"{other}\"\nfeatures = [{features}]\nkey = \"{key}\"\n")
    };
    let text = [
        set(
            "offline_only",
            "[[feature_set.targets]]\nkind = \"stream\"\nstream = \"S\"\nsubject = \"s\"\n",
            "",
        ),
        set(
            "a",
            "[[feature_set.targets]]\nkind = \"redis\"\n",
            &[
                join("nowhere", "missing", "\"x\"", "u"),
                join("itself", "a", "\"x\"", "u"),
                join("no_online", "offline_only", "\"x\"", "u"),
                join("empty", "offline_only", "", "nokey"),
            ]
            .concat(),
        ),
    ]
    .concat();
    let config = sluice::config::parse_str(&text, std::path::Path::new("j.toml")).unwrap();
    let problems = sluice::config::validate(&config);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "feature_set[1].steps[0].set",
            "feature_set[1].steps[1].set",
            "feature_set[1].steps[2].set",
            "feature_set[1].steps[3].set",
            "feature_set[1].steps[3].features",
            "feature_set[1].steps[3].key",
        ],
        "{problems:?}"
    );
    assert!(problems[0].message.contains("no feature set \"missing\""));
    assert!(problems[2].message.contains("no online target"));
}

#[test]
fn log_retention_is_checked_and_only_for_the_embedded_mode() {
    let parse = |text: &str| sluice::config::parse_str(text, std::path::Path::new("t.toml")).unwrap();
    let problems = sluice::config::validate(&parse("[host]\nlog_retention = \"7d\"\n"));
    assert_eq!(problems, []);
    let problems = sluice::config::validate(&parse("[host]\nlog_retention = \"7 weeks\"\n"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "host.log_retention");
    assert!(problems[0].message.contains("expected"), "{}", problems[0].message);
    let problems = sluice::config::validate(&parse(
        "[host]\nnats = \"nats://127.0.0.1:4222\"\nredis = \"redis://127.0.0.1\"\nlog_retention = \"7d\"\n",
    ));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("JetStream"), "{}", problems[0].message);
}

#[test]
fn event_time_formats_and_zones_are_checked_and_auto_gets_a_note() {
    let set = |timestamp: &str| {
        format!(
            "[[feature_set]]\nname = \"t\"\nentity = \"k\"\ntimestamp = {timestamp}\n\
             source = {{ kind = \"file\", path = \"x.csv\" }}\n[[feature_set.targets]]\nkind = \"parquet\"\nroot = \"o\"\n"
        )
    };
    let check = |timestamp: &str| {
        let config = sluice::config::parse_str(&set(timestamp), std::path::Path::new("t.toml")).unwrap();
        (sluice::config::validate(&config), sluice::config::notes(&config))
    };
    // An offline-only set (a parquet target alone) is valid.
    let (problems, notes) = check(r#"{ field = "ts", format = "%d/%m/%Y %H:%M", timezone = "Europe/Paris" }"#);
    assert_eq!((problems, notes), (vec![], vec![]));
    let (problems, _) = check(r#"{ field = "ts", timezone = "Mars/Olympus" }"#);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "feature_set[0].timestamp.timezone");
    assert!(problems[0].message.contains("IANA"), "{}", problems[0].message);
    let (problems, _) = check(r#"{ field = "ts", format = "%H:%M" }"#);
    assert_eq!(problems[0].key, "feature_set[0].timestamp.format");
    assert!(
        problems[0].message.contains("whole date and time"),
        "{}",
        problems[0].message
    );
    let (problems, notes) = check(r#"{ field = "ts" }"#);
    assert_eq!(problems, vec![]);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].key, "feature_set[0].timestamp.format");
    assert!(
        notes[0].message.contains("unit cannot be known"),
        "{}",
        notes[0].message
    );
    let error = sluice::config::parse_str(
        &set(r#"{ field = "ts", format = "epoch_minutes" }"#),
        std::path::Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("expected auto, rfc3339, epoch_s"), "{error}");
}

#[test]
fn a_bad_monitor_section_gets_a_problem_at_each_key() {
    let config = |monitor: &str| {
        let text = format!(
            "[[feature_set]]\nname = \"t\"\nentity = \"k\"\ntimestamp = {{ field = \"ts\", format = \"epoch_ms\" }}\n\
             source = {{ kind = \"file\", path = \"x.csv\" }}\n[[feature_set.targets]]\nkind = \"parquet\"\nroot = \"o\"\n\
             [feature_set.monitor]\n{monitor}"
        );
        sluice::config::parse_str(&text, std::path::Path::new("t.toml")).unwrap()
    };
    let good = config("reference = \"trained-2026.12\"\nwindow = \"5m\"\npolicy = { min_count = 100 }\n");
    assert_eq!(sluice::config::validate(&good), []);
    let bad = config("reference = \"../etc\"\nwindow = \"0s\"\npolicy = { psi = { possible = 0.3, drift = 0.2 } }\n");
    let problems = sluice::config::validate(&bad);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "feature_set[0].monitor.window",
            "feature_set[0].monitor.reference",
            "feature_set[0].monitor.policy.psi"
        ],
        "{problems:?}"
    );
    assert!(
        problems[2].message.contains("possible <= drift"),
        "{}",
        problems[2].message
    );
    // Segments: one or two known fields, with a reference, at most 100 of them.
    let segmented = |monitor: &str| {
        let text = format!(
            "[[feature_set]]\nname = \"t\"\nentity = \"k\"\nfields = [\"k\", \"ts\", \"country\", \"amount\"]\n\
             timestamp = {{ field = \"ts\", format = \"epoch_ms\" }}\nsource = {{ kind = \"file\", path = \"x.csv\" }}\n\
             [[feature_set.targets]]\nkind = \"parquet\"\nroot = \"o\"\n[feature_set.monitor]\n{monitor}"
        );
        let config = sluice::config::parse_str(&text, std::path::Path::new("t.toml")).unwrap();
        sluice::config::validate(&config)
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        segmented("reference = \"r\"\nsegments = [\"country\"]\n"),
        Vec::<String>::new()
    );
    let problems = segmented("segments = [\"country\", \"amount\", \"k\"]\nmax_segments = 0\n");
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("feature_set[0].monitor.segments: expected one or two fields, found 3"));
    assert!(problems[1].starts_with("feature_set[0].monitor.segments: segments are judged against the reference"));
    assert!(problems[2].starts_with("feature_set[0].monitor.max_segments: expected 1 to 100, found 0"));
    let problems = segmented("reference = \"r\"\nsegments = [\"contry\"]\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("feature_set[0].monitor.segments: ") && problems[0].contains("country"),
        "the nearest name: {problems:?}"
    );
    // An unknown key is refused when the file is read.
    let text = "[[feature_set]]\nname = \"t\"\nentity = \"k\"\ntimestamp = { field = \"ts\" }\n\
                source = { kind = \"file\", path = \"x.csv\" }\n[feature_set.monitor]\nwindows = \"1m\"\n";
    let refused = sluice::config::parse_str(text, std::path::Path::new("t.toml")).unwrap_err();
    assert!(refused.to_string().contains("windows"), "{refused}");
}

/// The time field and entity must be declared fields when `fields` is given (every event
/// would fail otherwise); a plugin that declares what it adds keeps later steps checked; a
/// feature vector naming a feature the set does not have is refused with the nearest name.
#[test]
fn undeclared_time_fields_unknown_vector_features_and_a_plugins_adds_are_checked() {
    let text = r#"
        [plugins]
        currency = "currency.wasm"

        [[feature_set]]
        name = "tx"
        entity = "user"
        timestamp = { field = "tss" }
        fields = ["user_id", "ts", "amount"]
        source = { kind = "jetstream", stream = "S", subject = "s" }

        [[feature_set.steps]]
        id = "usd"
        kind = "wasm"
        plugin = "currency"
        adds = ["amount_usd"]

        [[feature_set.steps]]
        id = "m"
        kind = "map"
        fields = { big = "amount_usd > 100.0", odd = "amount_eur > 1.0" }

        [[feature_vector]]
        name = "model"
        features = ["tx:big", "tx:amount_uds"]
    "#;
    let config = sluice::config::parse_str(text, std::path::Path::new("bad.toml")).unwrap();
    let problems = sluice::config::validate(&config);
    let shown: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "feature_set[0].timestamp.field",
            "feature_set[0].entity",
            "feature_set[0].steps[1].fields.odd",
            "feature_vector[0].features",
        ],
        "{shown:#?}"
    );
    assert!(
        shown[0].contains("\"tss\" is not among the declared fields"),
        "{shown:#?}"
    );
    assert!(shown[2].contains("\"amount_eur\""), "{shown:#?}");
    assert!(
        shown[3].contains("\"amount_uds\" (did you mean \"amount_usd\"?)"),
        "{shown:#?}"
    );
}

/// Issue 24 item 10: a problem names the line of its own key, not of the first step's header:
/// a misspelt key in the third step (a parse error) and validation problems alike.
#[test]
fn problems_name_the_line_of_their_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    let head = r#"[[feature_set]]
name = "tx"
entity = "user_id"
timestamp = { field = "tss" }
fields = ["user_id", "ts", "amount"]
source = { kind = "jetstream", stream = "TX", subject = "tx" }

[[feature_set.steps]]
id = "a"
kind = "filter"
expr = "amount > 0.0"

[[feature_set.steps]]
id = "b"
kind = "map"
fields = { double = "amount * 2.0" }

[[feature_set.steps]]
id = "c"
kind = "filter"
"#;
    // Line 21: the typo, in the third step.
    std::fs::write(&file, format!("{head}exprr = \"amount < 10.0\"\n")).unwrap();
    let e = sluice::config::load(&file).unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].key, "feature_set[0].steps[2].exprr", "{e}");
    assert_eq!(e.problems[0].line, Some(21), "{e}");
    assert!(
        e.to_string().contains("feature_set[0].steps[2].exprr (line 21): "),
        "{e}"
    );

    // Validation problems: the undeclared time field (line 4) and a bad expression in the
    // third step (line 21).
    std::fs::write(&file, format!("{head}expr = \"amount < \"\n")).unwrap();
    let e = sluice::config::load(&file).unwrap_err();
    let at: Vec<(&str, Option<usize>)> = e.problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        at,
        [
            ("feature_set[0].timestamp.field", Some(4)),
            ("feature_set[0].steps[2].expr", Some(21))
        ],
        "{e}"
    );
}
