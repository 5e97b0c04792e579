//! The binary's command line. (Also makes `cargo test --workspace` build `coalition-bench`, which
//! the end-to-end fault test in `tests/faults.rs` runs.)

use std::process::Command;

#[test]
fn faults_help_lists_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_coalition-bench")).args(["faults", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--kills", "--events", "--seed", "--out", "--broker-restarts"] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
}

#[test]
fn abuse_help_lists_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_coalition-bench")).args(["abuse", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--conversations", "--attempts", "--pathological", "--sparql-timeout-s", "--clients", "--out"] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
}
