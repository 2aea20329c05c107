//! The paper's facts, in one place: its data sets and their categories, the hard-setting
//! subsets, and the published numbers (`data/paper/results.csv`, transcribed from the DRA paper
//! and its supplement) that the tables print beside ours.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};

/// MVTec AD's fifteen categories, in the paper's order (textures, then objects).
pub const MVTEC_CATEGORIES: [&str; 15] = [
    "carpet",
    "grid",
    "leather",
    "tile",
    "wood",
    "bottle",
    "capsule",
    "pill",
    "transistor",
    "zipper",
    "cable",
    "hazelnut",
    "metal_nut",
    "screw",
    "toothbrush",
];

/// The data sets of paper Table 1, as `--datasets` names them.
pub const PAPER_GENERAL: [&str; 9] = [
    "mvtec",
    "aitex",
    "sdd",
    "elpv",
    "optical",
    "mastcam",
    "brainmri",
    "headct",
    "hyperkvasir",
];

/// The data sets of paper Table 4 (where the pseudo anomalies come from), hard setting.
pub const PSEUDO_DATASETS: [&str; 4] = ["mvtec/carpet", "aitex", "elpv", "hyperkvasir"];

/// The paper's hard-setting subsets (Table 2, §5.3 of the protocol): for each data set, the
/// known anomaly classes, named by their folder; one subset per known class.
pub const HARD_SUBSETS: &[(&str, &[&str])] = &[
    (
        "mvtec/carpet",
        &["color", "cut", "hole", "metal_contamination", "thread"],
    ),
    ("mvtec/metal_nut", &["bent", "color", "flip", "scratch"]),
    (
        "aitex",
        &[
            "Broken_end",
            "Broken_pick",
            "Cut_selvage",
            "Fuzzyball",
            "Nep",
            "Weft_crack",
        ],
    ),
    ("elpv", &["mono", "poly"]),
    (
        "mastcam",
        &[
            "bedrock",
            "broken-rock",
            "drill-hole",
            "drt",
            "dump-pile",
            "float",
            "meteorite",
            "scuff",
            "veins",
        ],
    ),
    (
        "hyperkvasir",
        &[
            "barretts",
            "barretts-short-segment",
            "esophagitis-a",
            "esophagitis-b-d",
        ],
    ),
];

/// The known classes of `dataset`'s hard-setting subsets, if the paper has any.
pub fn hard_subsets(dataset: &str) -> Option<&'static [&'static str]> {
    HARD_SUBSETS
        .iter()
        .find(|(d, _)| *d == dataset)
        .map(|(_, c)| *c)
}

/// The transcription, compiled in so that `cargo xtask` works from any folder.
const RESULTS_CSV: &str = include_str!("../../data/paper/results.csv");

/// Which table of ours a paper number belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PaperTable {
    General,
    Hard,
    CrossDomain,
    /// Table 3: DRA's head subsets (subset = the variant's name).
    Ablation,
    /// Table 4: pseudo-anomaly sources, data set means of the hard setting (subset = source).
    Pseudo,
}

impl PaperTable {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "general" => Some(Self::General),
            "hard" => Some(Self::Hard),
            "cross-domain" => Some(Self::CrossDomain),
            "ablation" => Some(Self::Ablation),
            "pseudo" => Some(Self::Pseudo),
            _ => None,
        }
    }
}

/// A published AUC-ROC: the mean over the paper's three runs and, where printed, the std.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaperValue {
    pub mean: f64,
    pub std: Option<f64>,
}

impl std::fmt::Display for PaperValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.std {
            Some(std) => write!(f, "{:.3}±{std:.3}", self.mean),
            None => write!(f, "{:.3}", self.mean),
        }
    }
}

/// (table, dataset, subset, method, shots) → value. `dataset` is a `--dataset` name or a group
/// (`mvtec` is the paper's "MVTec AD" mean row); `subset` is empty in the general setting, the
/// known class or `mean` in the hard setting, the source category across domains.
type Key = (PaperTable, String, String, String, usize);

pub struct PaperResults(BTreeMap<Key, PaperValue>);

impl PaperResults {
    pub fn load() -> Result<Self> {
        Self::parse(RESULTS_CSV)
    }

    fn parse(text: &str) -> Result<Self> {
        let mut map = BTreeMap::new();
        let mut lines = text.lines().enumerate();
        let header = "table,source,dataset,subset,method,shots,mean,std";
        if lines.next().map(|(_, l)| l) != Some(header) {
            bail!("data/paper/results.csv: line 1: expected `{header}`");
        }
        for (i, line) in lines.filter(|(_, l)| !l.is_empty()) {
            let bad = |why: &str| anyhow!("data/paper/results.csv: line {}: {why}", i + 1);
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 8 {
                return Err(bad("expected 8 fields"));
            }
            let table = PaperTable::parse(f[0]).ok_or_else(|| bad("unknown table"))?;
            let shots = f[5].parse().map_err(|_| bad("bad shots"))?;
            let mean = f[6].parse().map_err(|_| bad("bad mean"))?;
            let std = match f[7] {
                "" => None,
                s => Some(s.parse().map_err(|_| bad("bad std"))?),
            };
            let key = (table, f[2].into(), f[3].into(), f[4].into(), shots);
            if map.insert(key, PaperValue { mean, std }).is_some() {
                return Err(bad("duplicate entry"));
            }
        }
        Ok(Self(map))
    }

    pub fn get(
        &self,
        table: PaperTable,
        dataset: &str,
        subset: &str,
        method: &str,
        shots: usize,
    ) -> Option<PaperValue> {
        self.0
            .get(&(
                table,
                dataset.to_string(),
                subset.to_string(),
                method.to_string(),
                shots,
            ))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_transcription_parses_and_holds_the_headline_numbers() {
        let p = PaperResults::load().unwrap();
        let v = p.get(PaperTable::General, "mvtec", "", "dra", 10).unwrap();
        assert_eq!((v.mean, v.std), (0.959, Some(0.003)));
        let v = p.get(PaperTable::General, "mvtec", "", "dra", 1).unwrap();
        assert_eq!((v.mean, v.std), (0.883, Some(0.008)));
        let v = p
            .get(PaperTable::Hard, "mvtec/carpet", "color", "dra", 10)
            .unwrap();
        assert_eq!(v.to_string(), "0.886±0.042");
        let v = p
            .get(PaperTable::Hard, "hyperkvasir", "mean", "minns", 10)
            .unwrap();
        assert_eq!(v.mean, 0.608);
        let v = p
            .get(PaperTable::CrossDomain, "mvtec/grid", "carpet", "dra", 10)
            .unwrap();
        assert_eq!(v.to_string(), "0.983");
        // AHL's paper: the three headline numbers.
        let ahl = |d: &str, shots| p.get(PaperTable::General, d, "", "ahl", shots).unwrap();
        assert_eq!(ahl("mvtec", 10).to_string(), "0.970±0.002");
        assert_eq!(ahl("aitex", 10).mean, 0.925);
        assert_eq!(ahl("mvtec", 1).mean, 0.901);
        let v = p
            .get(PaperTable::Hard, "elpv", "mean", "ahl-devnet", 1)
            .unwrap();
        assert_eq!(v.mean, 0.678);
        assert!(p
            .get(PaperTable::General, "synthetic/weave", "", "dra", 10)
            .is_none());
        // Table 3, every variant; the full DRA's is Table 1's MVTec AD number.
        for (name, mean) in [
            ("DRA1A", 0.938),
            ("DRA2A", 0.911),
            ("DRA3Ar", 0.927),
            ("DRA3An", 0.949),
            ("DRA", 0.959),
        ] {
            let v = p
                .get(PaperTable::Ablation, "mvtec", name, "dra", 10)
                .unwrap();
            assert_eq!((v.mean, v.std), (mean, None), "{name}");
        }
        // Every hard subset of the paper has its DRA number.
        for (dataset, classes) in HARD_SUBSETS {
            for class in *classes {
                assert!(
                    p.get(PaperTable::Hard, dataset, class, "dra", 10).is_some(),
                    "{dataset} {class}"
                );
            }
        }
    }

    #[test]
    fn thirty_hard_subsets_as_in_the_paper() {
        let n: usize = HARD_SUBSETS.iter().map(|(_, c)| c.len()).sum();
        assert_eq!(n, 30);
        assert_eq!(hard_subsets("elpv"), Some(&["mono", "poly"][..]));
        assert_eq!(hard_subsets("sdd"), None);
    }

    #[test]
    fn malformed_lines_are_named() {
        let text = "table,source,dataset,subset,method,shots,mean,std\ngeneral,x,a,,dra,ten,0.5,\n";
        let err = PaperResults::parse(text).err().unwrap().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
