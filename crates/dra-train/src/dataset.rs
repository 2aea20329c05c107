//! Dataset names on the command line (`mvtec/carpet`, `synthetic/weave`) and the folders they
//! resolve to.

use std::path::{Path, PathBuf};

use dra_data::synthetic;

use crate::error::TrainError;

/// The folder under `--data-root` that holds MVTec AD's categories (MVTec's own archive name).
pub const MVTEC_FOLDER: &str = "mvtec_anomaly_detection";
/// The folder under `--data-root` that holds the embedded synthetic categories.
pub const SYNTHETIC_FOLDER: &str = "synthetic";

/// A data set as named by the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetName {
    /// A category in the MVTec AD layout: MVTec's own, or any folder laid out the same way.
    Mvtec(String),
    /// A category of the embedded default data set.
    Synthetic(String),
}

impl DatasetName {
    pub fn parse(name: &str) -> Result<Self, TrainError> {
        let bad = |message: String| TrainError::InvalidOption {
            flag: "--dataset",
            message,
        };
        let (family, category) = name.split_once('/').ok_or_else(|| {
            bad(format!(
                "`{name}` is not a dataset name; use mvtec/<category> or synthetic/<category>"
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
                "unknown dataset family `{other}`; supported: mvtec/<category>, synthetic/<category>"
            ))),
        }
    }

    /// The category folder. `data_root` holds datasets under their default folder names;
    /// `dataset_dir` is one dataset's own folder (for MVTec: the folder holding its
    /// categories). Synthetic data is generated on first use.
    pub fn resolve(
        &self,
        data_root: Option<&Path>,
        dataset_dir: Option<&Path>,
    ) -> Result<PathBuf, TrainError> {
        match self {
            Self::Mvtec(category) => {
                let base = match (dataset_dir, data_root) {
                    (Some(dir), _) => dir.to_path_buf(),
                    (None, Some(root)) => root.join(MVTEC_FOLDER),
                    (None, None) => {
                        return Err(TrainError::InvalidOption {
                            flag: "--data-root",
                            message: "mvtec/<category> needs --data-root DIR (holding mvtec_anomaly_detection/) or --dataset-dir DIR".into(),
                        })
                    }
                };
                Ok(base.join(category))
            }
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
}

/// `data/` of the source tree when run from it, else `./data`.
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
        let p = DatasetName::Mvtec("carpet".into())
            .resolve(Some(Path::new("/d")), None)
            .unwrap();
        assert_eq!(p, Path::new("/d/mvtec_anomaly_detection/carpet"));
        let p = DatasetName::Mvtec("carpet".into())
            .resolve(Some(Path::new("/d")), Some(Path::new("/m")))
            .unwrap();
        assert_eq!(p, Path::new("/m/carpet"));
        for bad in [
            "carpet",
            "mvtec/",
            "kolektor/x",
            "synthetic/nope",
            "mvtec/../x",
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
