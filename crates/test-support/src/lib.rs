//! What the workspace's tests share, as a dev-dependency of each crate (never a dependency of
//! the product): damaged files for the property tests of every parser of a user's file
//! ([`bytes`]), and hand-edited JSON records ([`json`]), so that every crate damages its inputs
//! the same way.

pub mod bytes;
pub mod json;
