//! Which files train and which test: the general and hard settings of the paper (§5.2 of the
//! protocol), reproducible from a seed on any file system.

use serde::{Deserialize, Serialize};

use crate::datasets::category::Category;
use crate::error::{DataError, Result};
use crate::mt19937::NumpyRandomState;
use crate::sample::{ImageRef, Label, Sample};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// How the labelled anomalies are chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "setting", rename_all = "lowercase")]
pub enum Setting {
    /// Labelled anomalies drawn from all defect classes; the test set keeps the rest.
    General,
    /// Labelled anomalies from one known class; the test set holds only the other classes.
    Hard {
        /// The defect class (folder name) the labelled anomalies come from.
        known_class: String,
    },
}

/// How a category is split into training and test files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitConfig {
    /// Number of labelled anomalies for training (`--n-anomaly`, the paper's 10 or 1).
    pub n_anomaly: usize,
    /// General or hard setting.
    pub setting: Setting,
    /// Seed of the NumPy `RandomState` that shuffles the anomaly list (official: 42).
    pub split_seed: u32,
    /// General setting only: test anomalies start at this position of the shuffled list.
    /// `None` means `n_anomaly` (the official default); 10 reproduces the paper's claim that
    /// one-shot and ten-shot runs share one test set.
    pub test_threshold: Option<usize>,
    /// General setting only: the fraction r of the training set that is unlabelled anomalies
    /// (`--contamination`, official `--cont_rate`). ⌊N / (1 − r) · r⌋ anomalies that follow the
    /// labelled ones in the shuffled list join the training normals; as in the official code they
    /// also stay in the test set unless `test_threshold` moves past them.
    #[serde(default)]
    pub contamination: f64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            n_anomaly: 10,
            setting: Setting::General,
            split_seed: 42,
            test_threshold: None,
            contamination: 0.0,
        }
    }
}

/// The files of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Split {
    /// Normal training images (`train/good`), followed by any contaminants.
    pub train_normal: Vec<ImageRef>,
    /// The labelled anomalies, in the order the seeded shuffle drew them.
    pub train_anomaly: Vec<Sample>,
    /// Normal test images first, then anomalies sorted by path (the official order), the
    /// rectangles of one file in order.
    pub test: Vec<Sample>,
    /// Unlabelled anomalies mixed into `train_normal` (contamination), for the record.
    #[serde(default)]
    pub contaminants: Vec<Sample>,
}

impl Split {
    /// Splits `category` as `config` says, as the official code does with NumPy's shuffle.
    /// Fails when there are too few anomalies or an option does not fit the category.
    pub fn new(category: &Category, config: &SplitConfig) -> Result<Self> {
        let n = config.n_anomaly;
        let mut rng = NumpyRandomState::new(config.split_seed);
        let tag = |class: &str, images: &[ImageRef]| -> Vec<Sample> {
            images
                .iter()
                .map(|image| Sample::new(image.clone(), Label::Anomaly, class))
                .collect()
        };
        if !(0.0..1.0).contains(&config.contamination) {
            return Err(DataError::InvalidOption {
                flag: "--contamination",
                message: format!("must lie in [0, 1), got {}", config.contamination),
            });
        }
        let mut contaminants = Vec::new();
        let (train_anomaly, mut test_anomaly) = match &config.setting {
            Setting::General => {
                let mut all: Vec<Sample> = category
                    .defects
                    .iter()
                    .flat_map(|(class, paths)| tag(class, paths))
                    .collect();
                if n > all.len() {
                    return Err(DataError::NotEnoughAnomalies {
                        flag: "--n-anomaly",
                        requested: n,
                        available: all.len(),
                        scope: format!(" in {}", category.root.display()),
                    });
                }
                rng.shuffle(&mut all);
                let threshold = config.test_threshold.unwrap_or(n);
                if threshold < n || threshold > all.len() {
                    return Err(DataError::InvalidOption {
                        flag: "--test-threshold",
                        message: format!(
                            "must lie between --n-anomaly ({n}) and the number of anomalies ({})",
                            all.len()
                        ),
                    });
                }
                let n_train = category.train_good.len() as f64;
                let r = config.contamination;
                let n_pollution = (n_train / (1.0 - r) * r) as usize;
                if n + n_pollution > all.len() {
                    return Err(DataError::NotEnoughAnomalies {
                        flag: "--contamination",
                        requested: n + n_pollution,
                        available: all.len(),
                        scope: format!(" for {n} labelled and {n_pollution} contaminating"),
                    });
                }
                contaminants = all[n..n + n_pollution].to_vec();
                let test = all.split_off(threshold);
                all.truncate(n);
                (all, test)
            }
            Setting::Hard { known_class } => {
                let Some(known) = category.defects.get(known_class) else {
                    return Err(DataError::UnknownClass {
                        name: known_class.clone(),
                        valid: category.defect_classes().join(", "),
                    });
                };
                let mut known = tag(known_class, known);
                if n > known.len() {
                    return Err(DataError::NotEnoughAnomalies {
                        flag: "--n-anomaly",
                        requested: n,
                        available: known.len(),
                        scope: format!(" in class `{known_class}`"),
                    });
                }
                rng.shuffle(&mut known);
                known.truncate(n);
                let unknown = category
                    .defects
                    .iter()
                    .filter(|(class, _)| *class != known_class)
                    .flat_map(|(class, paths)| tag(class, paths))
                    .collect();
                (known, unknown)
            }
        };
        test_anomaly.sort_by(|a, b| (&a.path, a.crop).cmp(&(&b.path, b.crop)));
        let mut test: Vec<Sample> = category
            .test_good
            .iter()
            .map(|image| Sample::new(image.clone(), Label::Normal, "good"))
            .collect();
        test.extend(test_anomaly);
        let mut train_normal = category.train_good.clone();
        train_normal.extend(contaminants.iter().map(Sample::image));
        Ok(Self {
            train_normal,
            train_anomaly,
            test,
            contaminants,
        })
    }

    /// Number of anomalies in the test set.
    pub fn n_test_anomalies(&self) -> usize {
        self.test.iter().filter(|s| s.label.is_anomalous()).count()
    }

    /// Takes a seeded `fraction` of the normal training images (contaminants never: they are
    /// anomalies) out of `train_normal` and returns them, in their listing order: normal
    /// images that training never sees, to calibrate a decision threshold on. At least one
    /// image is held out and at least one stays; a fraction of 0 changes nothing.
    pub fn hold_out_normals(&mut self, fraction: f64, seed: u64) -> Result<Vec<ImageRef>> {
        if fraction <= 0.0 {
            return Ok(Vec::new());
        }
        let contaminants: std::collections::HashSet<ImageRef> =
            self.contaminants.iter().map(Sample::image).collect();
        let candidates: Vec<usize> = (0..self.train_normal.len())
            .filter(|&i| !contaminants.contains(&self.train_normal[i]))
            .collect();
        if candidates.len() < 2 {
            return Err(DataError::InvalidOption {
                flag: "--calibration-fraction",
                message: format!(
                    "{} normal training image(s): too few to hold some out for calibration \
                     (give --calibration-fraction 0)",
                    candidates.len()
                ),
            });
        }
        let n =
            ((fraction * candidates.len() as f64).round() as usize).clamp(1, candidates.len() - 1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00CA_11B2_A7E0);
        let mut chosen: Vec<usize> = rand::seq::index::sample(&mut rng, candidates.len(), n)
            .into_iter()
            .map(|k| candidates[k])
            .collect();
        chosen.sort_unstable();
        let mut held = Vec::with_capacity(n);
        for &i in chosen.iter().rev() {
            held.push(self.train_normal.remove(i));
        }
        held.reverse();
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    fn category() -> Category {
        let paths = |dir: &str, n: usize| -> Vec<ImageRef> {
            (0..n)
                .map(|i| ImageRef::file(format!("/c/{dir}/{i:03}.png")))
                .collect()
        };
        let mut defects = BTreeMap::new();
        defects.insert("hole".to_string(), paths("test/hole", 6));
        defects.insert("scratch".to_string(), paths("test/scratch", 4));
        Category {
            root: "/c".into(),
            train_good: paths("train/good", 20),
            test_good: paths("test/good", 5),
            defects,
            ignored: Vec::new(),
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn held_out_normals_leave_training_and_follow_the_seed() {
        let cat = category();
        let split = Split::new(&cat, &SplitConfig::default()).unwrap();
        let mut a = split.clone();
        let held = a.hold_out_normals(0.1, 7).unwrap();
        assert_eq!((held.len(), a.train_normal.len()), (2, 18));
        assert!(held.iter().all(|h| !a.train_normal.contains(h)));
        let mut b = split.clone();
        assert_eq!(b.hold_out_normals(0.1, 7).unwrap(), held);
        let mut c = split.clone();
        assert_ne!(c.hold_out_normals(0.1, 8).unwrap(), held);
        // None for a fraction of 0: the official protocol's split, untouched.
        let mut d = split.clone();
        assert!(d.hold_out_normals(0.0, 7).unwrap().is_empty());
        assert_eq!(d.train_normal, split.train_normal);
        // Contaminants are never held out; one normal always stays.
        let config = SplitConfig {
            n_anomaly: 5,
            contamination: 0.1,
            ..Default::default()
        };
        let mut e = Split::new(&cat, &config).unwrap();
        let contaminants: Vec<ImageRef> = e.contaminants.iter().map(Sample::image).collect();
        assert!(!contaminants.is_empty());
        let held = e.hold_out_normals(0.5, 1).unwrap();
        assert!(held.iter().all(|h| !contaminants.contains(h)));
        let mut tiny = split.clone();
        tiny.train_normal.truncate(1);
        let err = tiny.hold_out_normals(0.1, 0).unwrap_err().to_string();
        assert!(err.starts_with("--calibration-fraction"), "{err}");
    }

    #[test]
    fn general_setting_removes_the_labelled_anomalies_from_test() {
        let cat = category();
        let cfg = SplitConfig {
            n_anomaly: 3,
            ..Default::default()
        };
        let split = Split::new(&cat, &cfg).unwrap();
        assert_eq!(split.train_anomaly.len(), 3);
        assert_eq!(split.test.len(), 5 + 7);
        for a in &split.train_anomaly {
            assert!(!split.test.iter().any(|t| t.path == a.path));
        }
        // NumPy: RandomState(42).permutation(10)[:3] == [8, 1, 5] over hole 0..6 then scratch 0..4.
        let chosen: Vec<_> = split.train_anomaly.iter().map(|s| s.path.clone()).collect();
        assert_eq!(
            chosen,
            [
                PathBuf::from("/c/test/scratch/002.png"),
                PathBuf::from("/c/test/hole/001.png"),
                PathBuf::from("/c/test/hole/005.png"),
            ]
        );
        // One-shot picks the first of the ten-shot list, as the paper says.
        let one = Split::new(
            &cat,
            &SplitConfig {
                n_anomaly: 1,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert_eq!(one.train_anomaly[0], split.train_anomaly[0]);
    }

    #[test]
    fn hard_setting_keeps_only_unknown_classes_in_test() {
        let cat = category();
        let cfg = SplitConfig {
            n_anomaly: 2,
            setting: Setting::Hard {
                known_class: "hole".into(),
            },
            ..Default::default()
        };
        let split = Split::new(&cat, &cfg).unwrap();
        assert!(split.train_anomaly.iter().all(|s| s.class == "hole"));
        assert_eq!(split.n_test_anomalies(), 4);
        assert!(split.test.iter().all(|s| s.class != "hole"));
    }

    #[test]
    fn contamination_follows_the_labelled_anomalies() {
        let cat = category();
        // 20 normals, r = 0.1 → ⌊20 / 0.9 · 0.1⌋ = 2 contaminants after the 3 labelled ones.
        let cfg = SplitConfig {
            n_anomaly: 3,
            contamination: 0.1,
            ..Default::default()
        };
        let split = Split::new(&cat, &cfg).unwrap();
        assert_eq!(split.train_normal.len(), 22);
        // RandomState(42) order over hole 0..6, scratch 0..4: s2 h1 h5 | h0 s1 | …
        let names: Vec<_> = split.contaminants.iter().map(|s| s.path.clone()).collect();
        assert_eq!(
            names,
            [
                PathBuf::from("/c/test/hole/000.png"),
                PathBuf::from("/c/test/scratch/001.png")
            ]
        );
        assert!(split.train_normal.contains(&ImageRef::file(&names[0])));
        // The official default keeps them in the test set; a threshold past them removes them.
        assert!(split.test.iter().any(|t| t.path == names[0]));
        let moved = Split::new(
            &cat,
            &SplitConfig {
                test_threshold: Some(5),
                ..cfg.clone()
            },
        )
        .unwrap();
        assert!(!moved
            .test
            .iter()
            .any(|t| t.path == names[0] || t.path == names[1]));
        let err = Split::new(
            &cat,
            &SplitConfig {
                contamination: 1.0,
                ..cfg
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("--contamination"), "{err}");
    }

    #[test]
    fn errors_name_the_flag_and_the_valid_classes() {
        let cat = category();
        let err = Split::new(
            &cat,
            &SplitConfig {
                n_anomaly: 2,
                setting: Setting::Hard {
                    known_class: "crack".into(),
                },
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("crack") && err.contains("hole, scratch"),
            "{err}"
        );
        let err = Split::new(
            &cat,
            &SplitConfig {
                n_anomaly: 11,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--n-anomaly") && err.contains("11"), "{err}");
    }
}
