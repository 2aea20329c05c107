//! The command-line options every sweep shares.

use std::path::PathBuf;

use clap::Args;
use dra_model::Method;
use dra_train::record::Overrides;
use dra_train::Profile;

/// `--shard I/N`: the I-th (1-based) of N interleaved slices of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`: expected I/N with 1 ≤ I ≤ N, e.g. 2/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Options shared by every sweep.
#[derive(Args, Clone)]
pub struct SweepArgs {
    /// Folder holding the data sets under their default names (`dra train --help`); default:
    /// the embedded synthetic data in `data/`.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Comma-separated data sets: `mvtec` (its 15 categories), `mvtec/<category>`, `aitex`, …,
    /// `synthetic` (every category) or `synthetic/<category>`; in the hard setting
    /// `NAME:CLASS` picks one known class. Default: the paper's data sets with --data-root,
    /// else the embedded synthetic data.
    #[arg(long, value_delimiter = ',')]
    pub datasets: Vec<String>,
    /// Comma-separated numbers of labelled anomalies [default: 10,1; across domains: 10].
    #[arg(long, value_delimiter = ',')]
    pub shots: Vec<usize>,
    /// Independent runs per cell (seeds 0..runs).
    #[arg(long, default_value_t = 3)]
    pub runs: u64,
    #[arg(long, value_enum, default_value_t = Profile::Quick)]
    pub profile: Profile,
    /// Results folder; default `results/<sweep>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Comma-separated methods: dra, devnet, deepsad, minns, flos, saoe, ahl (AHL on DRA),
    /// ahl-devnet (AHL on DevNet) (docs/methods.md); one column each in the tables.
    #[arg(long, value_delimiter = ',', default_value = "dra")]
    pub methods: Vec<Method>,
    /// Run only the I-th of N slices of the grid (`cargo xtask merge` unites the slices).
    #[arg(long, default_value = "1/1")]
    pub shard: Shard,
    /// Leave out image files that do not decode (each run lists them in its config.json and
    /// metrics.json, and the sweep prints them) instead of failing the runs that read them.
    #[arg(long)]
    pub skip_unreadable: bool,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_grid() {
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        for bad in ["0/2", "3/2", "1", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    pub(crate) fn args(extra: &[&str]) -> SweepArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            sweep: SweepArgs,
        }
        let base = [
            "x",
            "--datasets",
            "synthetic/weave,synthetic/granite",
            "--runs",
            "2",
        ];
        Cli::parse_from(base.iter().chain(extra)).sweep
    }
}
