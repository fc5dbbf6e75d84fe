//! The `sluice` binary as a user runs it: a batch run over a file ends by itself, and its log
//! lines on a pipe carry no colour codes.

use std::process::Command;

#[test]
fn a_batch_run_ends_with_exit_0_and_its_log_on_a_pipe_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let events: String = (0..20)
        .map(|i| {
            format!(
                "{{\"user\":\"u{}\",\"ts\":\"2024-01-01 00:00:{i:02}\",\"x\":{i}}}\n",
                i % 3
            )
        })
        .collect();
    std::fs::write(dir.path().join("e.jsonl"), events).unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[host]\ndata_dir = \"data\"\n\n[[feature_set]]\nname = \"f\"\nentity = \"user\"\ntimestamp = { field = \"ts\" }\n\
         source = { kind = \"file\", path = \"e.jsonl\" }\n\n[[feature_set.targets]]\nkind = \"parquet\"\nroot = \"offline\"\n\
         roll_seconds = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config", config.to_str().unwrap(), "--until-done"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("f@v1: 20 events, 0 failed"));
    assert!(stderr.contains("feature set running"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes on a pipe: {stderr:?}");
    let parts = std::fs::read_dir(dir.path().join("offline/f/v1/date=2024-01-01"))
        .unwrap()
        .count();
    assert!(parts >= 1);
}
