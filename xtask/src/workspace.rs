//! Where the workspace lies: the tasks' default folders (`data/`, `results/`) and scripts
//! (`tools/`) are found from its root, wherever `cargo xtask` is run from.

use std::path::{Path, PathBuf};

/// The workspace's root folder (the parent of `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
