//! `deploy/` is validated as far as this machine allows (no Docker engine): compose and k8s files
//! parse and reference what the product expects; scripts are syntactically valid.

#[test]
fn deploy_files_pass_their_checks() {
    let root = coalition_testkit::repo_root();
    let out = std::process::Command::new("bash")
        .arg(root.join("deploy/check.sh"))
        .current_dir(&root)
        .output()
        .expect("running deploy/check.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "deploy/check.sh failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
