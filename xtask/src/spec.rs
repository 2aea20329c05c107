//! `sweep.json`: what a sweep covers (its kind, profile, data sets and known classes, shots,
//! runs, losses and methods), resolved from the command line, written before the first run and
//! read back by `merge` and the tables. Nothing here runs anything.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dra_data::datasets::DatasetName;
use dra_data::pseudo::PseudoKind;
use dra_data::synthetic;
use dra_model::Method;
use dra_model::{HeadSet, LossKind};
use dra_train::Profile;
use serde::{Deserialize, Serialize};

use crate::cli::SweepArgs;
use crate::paper::{self, MVTEC_CATEGORIES, PAPER_GENERAL};
use crate::runs;

/// The hard-setting known classes of the embedded default data: one per category, so that the
/// default sweep stays within minutes on two cores.
const SYNTHETIC_HARD: [(&str, &str); 3] = [
    ("synthetic/weave", "hole"),
    ("synthetic/granite", "crack"),
    ("synthetic/washer", "dent"),
];

/// Which sweep: the paper's table it reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SweepKind {
    General,
    Hard,
    Loss,
    CrossDomain,
    /// Paper Table 3: DRA with subsets of its heads, general setting.
    Ablation,
    /// Paper Table 4: where the pseudo anomalies come from, hard setting.
    Pseudo,
}

/// Where a bench-pseudo run's pseudo anomalies come from: a generator, or outlier exposure
/// from `--outlier-root` (named by that folder's name, which says whose images they are).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PseudoSource {
    Generated(PseudoKind),
    OutlierExposure(String),
}

impl PseudoSource {
    /// The name in run keys and tables: `cutmix`, `cp-scar`, `cp-mix` or `oe-<folder>`.
    pub fn name(&self) -> String {
        match self {
            Self::Generated(kind) => kind.name().to_string(),
            Self::OutlierExposure(folder) => format!("oe-{folder}"),
        }
    }

    /// The row of paper Table 4 this source reproduces: the generators by name; outlier
    /// exposure from MVTec AD's or LAG's images by the folder's name.
    pub fn paper_name(&self) -> Option<&'static str> {
        match self {
            Self::Generated(kind) => Some(kind.name()),
            Self::OutlierExposure(folder) => {
                let folder = folder.to_ascii_lowercase();
                if folder.contains("lag") {
                    Some("oe-lag")
                } else if folder.contains("mvtec") {
                    Some("oe-mvtec")
                } else {
                    None
                }
            }
        }
    }
}

impl Serialize for PseudoSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for PseudoSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.strip_prefix("oe-") {
            Some(folder) => Self::OutlierExposure(folder.to_string()),
            None => Self::Generated(text.parse().map_err(serde::de::Error::custom)?),
        })
    }
}

impl SweepKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::General => "bench-general",
            Self::Hard => "bench-hard",
            Self::Loss => "bench-loss",
            Self::CrossDomain => "bench-cross-domain",
            Self::Ablation => "bench-ablation",
            Self::Pseudo => "bench-pseudo",
        }
    }

    pub(crate) fn hard(self) -> bool {
        matches!(self, Self::Hard | Self::Loss | Self::Pseudo)
    }
}

/// `sweep.json`: what the sweep covers, so that `merge` can check that shards belong together
/// and render the same table as the unsharded sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    pub sweep: SweepKind,
    pub profile: Profile,
    /// One entry per table row group: a data set and, in the hard setting, its known classes.
    pub entries: Vec<Entry>,
    pub shots: Vec<usize>,
    pub runs: u64,
    pub losses: Vec<LossKind>,
    pub methods: Vec<String>,
    /// Cross-domain: epochs of fine-tuning on the target's normal images.
    #[serde(default)]
    pub fine_tune_epochs: Option<usize>,
    /// Ablation: DRA's head subsets, one table row group each (the paper's Table 3 variants);
    /// empty for the other sweeps, whose runs use all four heads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heads: Vec<HeadSet>,
    /// Pseudo-anomaly study: the sources compared, one table row group each (paper Table 4);
    /// empty for the other sweeps, whose runs use the configured source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pseudo: Vec<PseudoSource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `--dataset` name, e.g. `mvtec/carpet`.
    pub dataset: String,
    /// Known classes (hard setting); empty in the general setting.
    pub known_classes: Vec<String>,
    /// The data's folder, or `None` when it does not exist (the table says "absent").
    pub dir: Option<PathBuf>,
}

impl SweepSpec {
    /// Resolves the data sets of a sweep; missing folders are recorded as absent.
    pub fn new(
        kind: SweepKind,
        args: &SweepArgs,
        losses: Vec<LossKind>,
        fine_tune_epochs: Option<usize>,
    ) -> Result<Self> {
        if args.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if args.methods.is_empty() {
            bail!("--methods: give at least one method");
        }
        let mut methods: Vec<Method> = Vec::new();
        for m in &args.methods {
            if !methods.contains(m) {
                methods.push(*m);
            }
        }
        if kind == SweepKind::CrossDomain && methods.len() > 1 {
            bail!("--methods: bench-cross-domain compares sources, one method at a time");
        }
        if kind == SweepKind::Ablation && methods != [Method::Dra] {
            bail!("--methods: bench-ablation compares DRA's heads; give --methods dra");
        }
        if kind == SweepKind::Ablation && args.overrides.heads.is_some() {
            bail!("--heads: bench-ablation runs every Table 3 variant; use bench-general for one");
        }
        if kind == SweepKind::Pseudo && methods != [Method::Dra] {
            bail!(
                "--methods: bench-pseudo compares DRA's pseudo-anomaly sources; give --methods dra"
            );
        }
        if kind == SweepKind::Pseudo && args.overrides.pseudo.is_some() {
            bail!("--pseudo: bench-pseudo runs every source; use bench-hard for one");
        }
        if kind == SweepKind::Loss {
            if let Some(m) = methods.iter().find(|m| !m.takes_loss_option()) {
                bail!("--methods: {m} has a loss of its own; bench-loss compares losses");
            }
        }
        let shots = match (&args.shots[..], kind) {
            ([], SweepKind::CrossDomain | SweepKind::Ablation | SweepKind::Pseudo) => vec![10],
            ([], _) => vec![10, 1],
            (given, _) => given.to_vec(),
        };
        let requested: Vec<String> = if !args.datasets.is_empty() {
            args.datasets.clone()
        } else if args.data_root.is_none() {
            vec!["synthetic".into()]
        } else if kind == SweepKind::CrossDomain {
            MVTEC_CATEGORIES[..5]
                .iter()
                .map(|c| format!("mvtec/{c}"))
                .collect()
        } else if kind == SweepKind::Ablation {
            vec!["mvtec".into()]
        } else if kind == SweepKind::Pseudo {
            paper::PSEUDO_DATASETS
                .iter()
                .map(|d| d.to_string())
                .collect()
        } else if kind.hard() {
            paper::HARD_SUBSETS
                .iter()
                .map(|(d, _)| d.to_string())
                .collect()
        } else {
            PAPER_GENERAL.iter().map(|d| d.to_string()).collect()
        };
        let default_root = crate::workspace::root().join("data");
        let mut entries: Vec<Entry> = Vec::new();
        for name in requested {
            let (name, class) = match name.split_once(':') {
                Some((n, c)) if kind.hard() => (n.to_string(), Some(c.to_string())),
                Some(_) => bail!("--datasets: `{name}`: NAME:CLASS is for the hard setting"),
                None => (name, None),
            };
            let expanded: Vec<String> = match name.as_str() {
                "mvtec" => MVTEC_CATEGORIES
                    .iter()
                    .map(|c| format!("mvtec/{c}"))
                    .collect(),
                "synthetic" => synthetic::category_names()
                    .iter()
                    .map(|c| format!("synthetic/{c}"))
                    .collect(),
                _ => vec![name.clone()],
            };
            for dataset in expanded {
                let parsed = DatasetName::parse(&dataset)
                    .with_context(|| format!("--datasets: `{dataset}`"))?;
                let root = match (&parsed, &args.data_root) {
                    (_, Some(root)) => root.clone(),
                    (DatasetName::Synthetic(_), None) => default_root.clone(),
                    (_, None) => bail!(
                        "--data-root: `{dataset}` is not embedded; give --data-root DIR holding it"
                    ),
                };
                let dir = parsed.resolve(Some(&root), None)?;
                let known_classes = match (&class, kind.hard()) {
                    (_, false) => Vec::new(),
                    (Some(c), true) => vec![c.clone()],
                    (None, true) => hard_classes(&dataset)?,
                };
                if let Some(e) = entries.iter_mut().find(|e| e.dataset == dataset) {
                    e.known_classes.extend(known_classes);
                    continue;
                }
                entries.push(Entry {
                    dataset,
                    known_classes,
                    dir: dir.is_dir().then_some(dir),
                });
            }
        }
        Ok(Self {
            sweep: kind,
            profile: args.profile,
            entries,
            shots,
            runs: args.runs,
            losses,
            methods: methods.iter().map(|m| m.name().to_string()).collect(),
            fine_tune_epochs,
            heads: if kind == SweepKind::Ablation {
                HeadSet::PAPER_VARIANTS
                    .iter()
                    .map(|(_, set)| *set)
                    .collect()
            } else {
                Vec::new()
            },
            pseudo: if kind == SweepKind::Pseudo {
                pseudo_sources(args)
            } else {
                Vec::new()
            },
        })
    }

    pub fn absent(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.dir.is_none())
            .map(|e| e.dataset.as_str())
            .collect()
    }

    /// The spec with machine-specific folders left out, for comparing shards.
    fn portable(&self) -> Self {
        let mut s = self.clone();
        for e in &mut s.entries {
            e.dir = e.dir.as_ref().map(|_| PathBuf::new());
        }
        s
    }

    /// True when two specs describe the same grid (shards of one sweep).
    pub fn same_grid(&self, other: &Self) -> bool {
        self.portable() == other.portable()
    }
}

/// bench-pseudo's sources: paper Table 4's generators, and outlier exposure when the sweep is
/// given `--outlier-root` (named by that folder).
fn pseudo_sources(args: &SweepArgs) -> Vec<PseudoSource> {
    let mut sources: Vec<PseudoSource> =
        [PseudoKind::CpScar, PseudoKind::CpMix, PseudoKind::Cutmix]
            .map(PseudoSource::Generated)
            .into();
    if let Some(root) = &args.overrides.outlier_root {
        let folder = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "outliers".into());
        sources.push(PseudoSource::OutlierExposure(folder));
    }
    sources
}

/// The known classes of a data set's hard-setting subsets.
fn hard_classes(dataset: &str) -> Result<Vec<String>> {
    if let Some(classes) = paper::hard_subsets(dataset) {
        return Ok(classes.iter().map(|c| c.to_string()).collect());
    }
    if let Some((_, class)) = SYNTHETIC_HARD.iter().find(|(d, _)| *d == dataset) {
        return Ok(vec![class.to_string()]);
    }
    bail!(
        "--datasets: `{dataset}` has no hard-setting subsets in the paper; name one as {dataset}:CLASS"
    )
}

/// Writes `OUT/sweep.json`; an `OUT` that holds another kind of sweep is refused.
pub fn write_spec(out: &Path, spec: &SweepSpec) -> Result<()> {
    let path = out.join("sweep.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(old) = serde_json::from_str::<SweepSpec>(&text) {
            if old.sweep != spec.sweep {
                bail!(
                    "--out {}: holds a {} sweep, not {}; choose another folder",
                    out.display(),
                    old.sweep.name(),
                    spec.sweep.name()
                );
            }
        }
    }
    let mut text = serde_json::to_string_pretty(spec)?;
    text.push('\n');
    runs::write_atomic(&path, text.as_bytes())
}

/// The most runs (seeds) per cell a `sweep.json` may ask for: far beyond any table, and small
/// enough that a damaged file cannot make the grid or the table loop for ever.
const MAX_RUNS: u64 = 10_000;

/// Reads `sweep.json`, and checks what the file cannot be trusted to hold: at least one run,
/// method, loss, shot count and data set, and known method names.
pub fn read_spec(dir: &Path) -> Result<SweepSpec> {
    let path = dir.join("sweep.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: not a sweep results folder", path.display()))?;
    let spec: SweepSpec =
        serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    let bad = |why: String| anyhow::anyhow!("{}: {why}", path.display());
    if !(1..=MAX_RUNS).contains(&spec.runs) {
        return Err(bad(format!("runs is {}, not in 1..={MAX_RUNS}", spec.runs)));
    }
    if spec.entries.is_empty() || spec.shots.is_empty() || spec.losses.is_empty() {
        return Err(bad("entries, shots and losses must not be empty".into()));
    }
    if spec.methods.is_empty() {
        return Err(bad("methods must not be empty".into()));
    }
    if let Some(m) = spec.methods.iter().find(|m| m.parse::<Method>().is_err()) {
        return Err(bad(format!("unknown method `{m}`")));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_classes_come_from_the_paper_or_the_user() {
        assert_eq!(hard_classes("elpv").unwrap(), ["mono", "poly"]);
        assert_eq!(hard_classes("synthetic/weave").unwrap(), ["hole"]);
        let err = hard_classes("mvtec/bottle").unwrap_err().to_string();
        assert!(err.contains("mvtec/bottle:CLASS"), "{err}");
    }
}
