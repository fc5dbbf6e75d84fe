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
