//! Helpers shared by the workspace's property tests; other crates include the files by path.

pub mod bytes;
