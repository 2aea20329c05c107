//! What the integration tests share: running the `dra` program, and the device the model
//! tests run on.

#![allow(dead_code)]

use std::process::Command;

use candle_core::Device;

/// The device the model tests run on: the CPU, or the first GPU with `DRA_TEST_DEVICE=cuda` in
/// a build with `--features cuda` (`cargo xtask gpu-check` runs the tests so). One device for
/// the whole process: each `Device::new_cuda` is a device of its own, whose tensors do not mix
/// with another's.
pub fn device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| match std::env::var("DRA_TEST_DEVICE").as_deref() {
            Err(_) | Ok("" | "cpu") => Device::Cpu,
            Ok("cuda") => Device::new_cuda(0)
                .expect("DRA_TEST_DEVICE=cuda: no usable CUDA device (build with --features cuda)"),
            Ok(other) => panic!("DRA_TEST_DEVICE: unknown device `{other}`; valid: cpu, cuda"),
        })
        .clone()
}

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

/// The values of a float32 `(size, size)` `.npy` file (as NumPy writes and reads it).
pub fn read_npy(path: &std::path::Path, size: usize) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(
        header.contains(&format!("'shape': ({size}, {size})")),
        "{header}"
    );
    bytes[10 + header_len..]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The one line of an error report; fails the test when there are more or none.
pub fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {stderr}");
    lines[0]
}
