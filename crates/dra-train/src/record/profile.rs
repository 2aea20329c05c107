//! The named sets of defaults a run starts from (`--profile`): the official protocol, a CPU
//! pipeline check, and a detector on one's own images.

use serde::{Deserialize, Serialize};

/// A named set of defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Exactly the official code: 448 px, batch 48 + 5 references, 30 epochs × 20 steps.
    Paper,
    /// A CPU-sized schedule that still learns: small images, shorter training, a larger step.
    /// A pipeline check on real images from random weights, not a detector.
    Quick,
    /// For a detector on one's own images on a CPU: 128 px, 100 steps of 48 at the official
    /// learning rate, and a tenth of the training normals held out to calibrate the decision
    /// threshold.
    #[cfg_attr(feature = "cli", value(name = "own-data"))]
    #[serde(rename = "own-data")]
    OwnData,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Paper => "paper",
            Self::Quick => "quick",
            Self::OwnData => "own-data",
        })
    }
}
