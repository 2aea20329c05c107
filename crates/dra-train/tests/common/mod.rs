//! Running the `dra` program from the integration tests.

#![allow(dead_code)]

use std::process::Command;

/// Runs `dra` with `args` and returns (success, stdout, stderr); a panic fails the test.
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dra"))
        .args(args)
        .output()
        .expect("dra runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "dra panicked: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// The one line of an error report; fails the test when there are more or none.
pub fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {stderr}");
    lines[0]
}
