//! Dataset names on the command line (`mvtec/carpet`, `brainmri`, `synthetic/weave`) and the
//! folders they resolve to.

use std::path::{Path, PathBuf};

use super::{Family, MVTEC_FOLDER, SYNTHETIC_FOLDER};
use crate::error::{DataError, Result};
use crate::synthetic;

/// A data set as named by the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetName {
    /// A category in the MVTec AD layout: MVTec's own, or any folder laid out the same way.
    Mvtec(String),
    /// A benchmark data set with a raw-layout loader (ELPV, Mastcam, BrainMRI, …).
    Family(Family),
    /// A category of the embedded default data set.
    Synthetic(String),
}

/// `--help` text listing the names and their default folders.
pub fn names_help() -> String {
    let mut s = format!("mvtec/<category> ({MVTEC_FOLDER}/<category>), synthetic/<category> ({SYNTHETIC_FOLDER}/<category>)");
    for f in Family::ALL.into_iter().filter(|f| *f != Family::Mvtec) {
        s += &format!(", {} ({})", f.name(), f.default_folder());
    }
    s
}

impl DatasetName {
    /// Parses a `--dataset` value: a family name (`brainmri`, …), `mvtec/CATEGORY` or
    /// `synthetic/CATEGORY`. An unknown name is an error that lists the valid ones.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = |message: String| DataError::InvalidOption {
            flag: "--dataset",
            message,
        };
        if let Some(family) = Family::from_name(name).filter(|f| *f != Family::Mvtec) {
            return Ok(Self::Family(family));
        }
        let (family, category) = name.split_once('/').ok_or_else(|| {
            bad(format!(
                "`{name}` is not a dataset name; valid: {}",
                names_help()
            ))
        })?;
        if category.is_empty() || category.contains(['/', '\\']) || category == ".." {
            return Err(bad(format!(
                "`{name}`: the category must be one folder name"
            )));
        }
        match family {
            "mvtec" => Ok(Self::Mvtec(category.into())),
            "synthetic" => {
                if !synthetic::category_names().contains(&category) {
                    return Err(bad(format!(
                        "unknown synthetic category `{category}`; valid: {}",
                        synthetic::category_names().join(", ")
                    )));
                }
                Ok(Self::Synthetic(category.into()))
            }
            other => Err(bad(format!(
                "unknown dataset family `{other}`; valid: {}",
                names_help()
            ))),
        }
    }

    /// The folder of the data (for MVTec and synthetic: the category). `data_root` holds data
    /// sets under their default folder names; `dataset_dir` is one data set's own folder (for
    /// MVTec: the folder holding its categories). Synthetic data is generated on first use.
    pub fn resolve(&self, data_root: Option<&Path>, dataset_dir: Option<&Path>) -> Result<PathBuf> {
        let base = |default: &str| -> Result<PathBuf> {
            match (dataset_dir, data_root) {
                (Some(dir), _) => Ok(dir.to_path_buf()),
                (None, Some(root)) => Ok(root.join(default)),
                (None, None) => Err(DataError::InvalidOption {
                    flag: "--data-root",
                    message: format!(
                        "give --data-root DIR (holding {default}/) or --dataset-dir DIR"
                    ),
                }),
            }
        };
        match self {
            Self::Mvtec(category) => Ok(base(MVTEC_FOLDER)?.join(category)),
            Self::Family(family) => base(family.default_folder()),
            Self::Synthetic(category) => {
                let base = match (dataset_dir, data_root) {
                    (Some(dir), _) => dir.to_path_buf(),
                    (None, Some(root)) => root.join(SYNTHETIC_FOLDER),
                    (None, None) => default_data_root().join(SYNTHETIC_FOLDER),
                };
                synthetic::ensure(&base, &synthetic::SyntheticSpec::default())?;
                Ok(base.join(category))
            }
        }
    }

    /// The loader for the resolved folder.
    pub fn family(&self) -> Family {
        match self {
            Self::Family(f) => *f,
            Self::Mvtec(_) | Self::Synthetic(_) => Family::Mvtec,
        }
    }
}

/// `data/` of the source tree when run from it, else `./data`: where the embedded data set is
/// generated.
pub fn default_data_root() -> PathBuf {
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    if in_tree.is_dir() {
        in_tree
    } else {
        PathBuf::from("data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        assert_eq!(
            DatasetName::parse("mvtec/carpet").unwrap(),
            DatasetName::Mvtec("carpet".into())
        );
        assert_eq!(
            DatasetName::parse("brainmri").unwrap(),
            DatasetName::Family(Family::BrainMri)
        );
        let p = DatasetName::Mvtec("carpet".into())
            .resolve(Some(Path::new("/d")), None)
            .unwrap();
        assert_eq!(p, Path::new("/d/mvtec_anomaly_detection/carpet"));
        let p = DatasetName::Mvtec("carpet".into())
            .resolve(Some(Path::new("/d")), Some(Path::new("/m")))
            .unwrap();
        assert_eq!(p, Path::new("/m/carpet"));
        let p = DatasetName::Family(Family::HeadCt)
            .resolve(Some(Path::new("/d")), None)
            .unwrap();
        assert_eq!(p, Path::new("/d/head_ct"));
        for (name, folder) in [
            ("aitex", "AITEX"),
            ("sdd", "KolektorSDD"),
            ("optical", "DAGM2007"),
        ] {
            let parsed = DatasetName::parse(name).unwrap();
            assert_eq!(parsed.family().name(), name);
            let p = parsed.resolve(Some(Path::new("/d")), None).unwrap();
            assert_eq!(p, Path::new("/d").join(folder));
            let p = parsed
                .resolve(
                    Some(Path::new("/d")),
                    Some(Path::new("/x/AITEX_anomaly_detection/AITEX")),
                )
                .unwrap();
            assert_eq!(p, Path::new("/x/AITEX_anomaly_detection/AITEX"));
        }
        for bad in [
            "carpet",
            "mvtec/",
            "kolektor/x",
            "synthetic/nope",
            "mvtec/../x",
            "aitex/x",
        ] {
            let e = DatasetName::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("--dataset"), "{bad}: {e}");
        }
        let e = DatasetName::Mvtec("c".into())
            .resolve(None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--data-root"), "{e}");
    }
}
