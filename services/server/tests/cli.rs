//! The `coalition` binary's offline commands. (Also makes `cargo test --workspace` build the
//! binary that the end-to-end tests drive.)

use std::process::Command;

fn coalition() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coalition"))
}

#[test]
fn schema_command_prints_the_committed_sdl() {
    let out = coalition().arg("schema").output().expect("runs");
    assert!(out.status.success());
    let committed = include_str!("../../../schema/graphql/schema.graphql");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn help_lists_the_commands() {
    let out = coalition().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in ["serve", "import", "seed", "dump", "schema"] {
        assert!(text.contains(cmd), "--help does not mention {cmd}: {text}");
    }
}

#[test]
fn import_without_brokers_is_a_clear_error() {
    let out =
        coalition().args(["import", "nothing.jsonl"]).env_remove("COALITION_KAFKA_BROKERS").output().expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--kafka-brokers"), "{err}");
}
