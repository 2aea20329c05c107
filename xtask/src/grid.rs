//! The grid of a sweep: every training run it holds, in a fixed order, and each run's
//! configuration and hash. Pure functions of `sweep.json` and the overrides.

use std::path::{Path, PathBuf};

use dra_data::Setting;
use dra_model::Method;
use dra_model::{HeadSet, LossKind};
use dra_train::record::Overrides;
use dra_train::TrainConfig;
use sha2::{Digest, Sha256};

use crate::runs::run_key;
use crate::spec::{Entry, PseudoSource, SweepKind, SweepSpec};

/// One grid cell: a training run.
#[derive(Clone, Debug)]
pub struct Job {
    pub dataset: String,
    pub dir: PathBuf,
    pub known_class: Option<String>,
    /// Cross-domain fine-tuning: the source data set whose model (trained with `shots` labelled
    /// anomalies) this run starts from, on the target's normal images only.
    pub source: Option<String>,
    pub loss: LossKind,
    pub method: String,
    pub shots: usize,
    pub seed: u64,
    /// Ablation: the subset of DRA's heads; `None` for all four (every other sweep).
    pub heads: Option<HeadSet>,
    /// Pseudo-anomaly study: the source of the pseudo anomalies; `None`: as configured.
    pub pseudo: Option<PseudoSource>,
}

/// The name of a head subset in keys and tables: the paper's (`DRA2A`), else its heads.
pub fn variant_name(heads: HeadSet) -> String {
    heads
        .paper_name()
        .map_or_else(|| heads.to_string(), str::to_string)
}

impl Job {
    /// What tells this run apart from others on the same data: the known class, the source
    /// data set, or the head subset's name; empty in the general setting.
    /// With a pseudo-anomaly source, the known class and the source: `hole+cp-scar`.
    pub fn subset(&self) -> String {
        match (&self.known_class, &self.source, self.heads) {
            (Some(class), _, _) => match &self.pseudo {
                Some(pseudo) => format!("{class}+{}", pseudo.name()),
                None => class.clone(),
            },
            (None, Some(source), _) => source.clone(),
            (None, None, Some(heads)) => variant_name(heads),
            (None, None, None) => String::new(),
        }
    }

    pub fn key(&self) -> String {
        run_key(
            &self.dataset,
            &self.subset(),
            &self.method,
            &self.loss.to_string(),
            self.shots,
            self.seed,
        )
    }

    pub(crate) fn describe(&self) -> String {
        let mut s = self.dataset.clone();
        if let Some(c) = &self.known_class {
            s += &format!(" known {c}");
        }
        if let Some(source) = &self.source {
            s += &format!(" fine-tuned from {source}");
        }
        if let Some(heads) = self.heads {
            s += &format!(" {} ({heads})", variant_name(heads));
        }
        if let Some(pseudo) = &self.pseudo {
            s += &format!(" pseudo {}", pseudo.name());
        }
        let method: Method = self.method.parse().expect("names of Method::ALL");
        if method.takes_loss_option() {
            s += &format!(" {}", self.loss);
        }
        format!("{s} {method} {}-shot seed {}", self.shots, self.seed)
    }
}

impl SweepSpec {
    /// Every run of the sweep in a fixed order (present data sets only), in units that a shard
    /// runs whole: one run each, except across domains, where a source's run comes with the
    /// fine-tuning runs that start from its model.
    pub fn units(&self) -> Vec<Vec<Job>> {
        let mut units = Vec::new();
        let present: Vec<(&Entry, &PathBuf)> = self
            .entries
            .iter()
            .filter_map(|e| Some((e, e.dir.as_ref()?)))
            .collect();
        let variants: Vec<Option<HeadSet>> =
            or_none(self.heads.iter().copied().map(Some).collect());
        let sources: Vec<Option<PseudoSource>> =
            or_none(self.pseudo.iter().cloned().map(Some).collect());
        for (e, dir) in &present {
            let classes: Vec<Option<String>> = if self.sweep.hard() {
                e.known_classes.iter().cloned().map(Some).collect()
            } else {
                vec![None]
            };
            // One job per cell, in the order class, source, heads, loss, method, shots, seed.
            let mut jobs = Vec::new();
            for known_class in &classes {
                for pseudo in &sources {
                    for &heads in &variants {
                        for &loss in &self.losses {
                            for method in &self.methods {
                                for &shots in &self.shots {
                                    jobs.extend((0..self.runs).map(|seed| Job {
                                        dataset: e.dataset.clone(),
                                        dir: (*dir).clone(),
                                        known_class: known_class.clone(),
                                        source: None,
                                        loss,
                                        method: method.clone(),
                                        shots,
                                        seed,
                                        heads,
                                        pseudo: pseudo.clone(),
                                    }));
                                }
                            }
                        }
                    }
                }
            }
            for job in jobs {
                let mut unit = vec![job.clone()];
                if self.sweep == SweepKind::CrossDomain {
                    for (target, target_dir) in &present {
                        if target.dataset != e.dataset {
                            unit.push(Job {
                                dataset: target.dataset.clone(),
                                dir: (*target_dir).clone(),
                                source: Some(e.dataset.clone()),
                                ..job.clone()
                            });
                        }
                    }
                }
                units.push(unit);
            }
        }
        units
    }
}

/// An axis that only some sweeps have: its values, or one `None` in the other sweeps.
fn or_none<T>(values: Vec<Option<T>>) -> Vec<Option<T>> {
    if values.is_empty() {
        vec![None]
    } else {
        values
    }
}

/// The configuration of one run: the profile, the user's overrides, then the cell's own values.
/// A fine-tuning run starts from its source's model in `out` and sees no labelled anomaly.
pub fn job_config(job: &Job, spec: &SweepSpec, overrides: &Overrides, out: &Path) -> TrainConfig {
    let mut c = TrainConfig::for_profile(spec.profile);
    c.method = job
        .method
        .parse()
        .expect("sweep.json holds the names of Method::ALL");
    overrides.apply(&mut c);
    c.n_anomaly = job.shots;
    c.seed = job.seed;
    c.loss = job.loss;
    if let Some(heads) = job.heads {
        c.heads = heads;
    }
    match &job.pseudo {
        // A generator replaces outlier exposure for this run.
        Some(PseudoSource::Generated(kind)) => {
            c.pseudo = *kind;
            c.outlier_root = None;
        }
        // The sweep's --outlier-root, which the overrides set.
        Some(PseudoSource::OutlierExposure(_)) | None => {}
    }
    if let Some(class) = &job.known_class {
        c.setting = Setting::Hard {
            known_class: class.clone(),
        };
    }
    if let Some(source) = &job.source {
        let source_key = Job {
            dataset: source.clone(),
            source: None,
            ..job.clone()
        }
        .key();
        c.n_anomaly = 0;
        c.epochs = spec.fine_tune_epochs.unwrap_or(c.epochs);
        c.init_model = Some(out.join("runs").join(source_key).join("model.safetensors"));
    }
    c
}

/// A short hash of everything that decides a run's result: the data set's name, the subset and
/// the configuration. Folders enter by their last component only, so that machines with their
/// data in different places (shards of one sweep) agree on the hash.
/// A fine-tuning run's hash includes its source run's (`parent`).
pub fn config_hash(
    dataset: &str,
    subset: &str,
    config: &TrainConfig,
    parent: Option<&str>,
) -> String {
    let mut c = config.clone();
    let last = |p: &Path| PathBuf::from(p.file_name().unwrap_or(p.as_os_str()));
    c.weights = c.weights.as_deref().map(last);
    c.outlier_root = c.outlier_root.as_deref().map(last);
    c.init_model = c.init_model.as_deref().map(last);
    let text = serde_json::to_string(&(dataset, subset, &c, parent)).expect("configs serialise");
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::args;

    #[test]
    fn the_hash_follows_the_config_but_not_the_machine() {
        let mut a = TrainConfig::quick();
        a.weights = Some("/home/a/resnet18.pth".into());
        let mut b = a.clone();
        b.weights = Some("/scratch/b/resnet18.pth".into());
        let h = config_hash("mvtec/carpet", "", &a, None);
        assert_eq!(h.len(), 16);
        assert_eq!(h, config_hash("mvtec/carpet", "", &b, None));
        b.lr *= 2.0;
        assert_ne!(h, config_hash("mvtec/carpet", "", &b, None));
        assert_ne!(h, config_hash("mvtec/carpet", "color", &a, None));
        assert_ne!(h, config_hash("mvtec/grid", "", &a, None));
        assert_ne!(h, config_hash("mvtec/carpet", "", &a, Some("0123")));
    }

    #[test]
    fn the_grid_crosses_methods_shots_and_seeds_and_each_run_gets_its_method() {
        let a = args(&["--methods", "dra,flos,dra", "--shots", "5"]);
        let spec = SweepSpec::new(SweepKind::General, &a, vec![LossKind::Deviation], None).unwrap();
        assert_eq!(spec.methods, ["dra", "flos"]);
        let units = spec.units();
        assert_eq!(units.len(), 2 * 2 * 2);
        let out = Path::new("/o");
        let flos: Vec<TrainConfig> = units
            .iter()
            .flatten()
            .filter(|j| j.method == "flos")
            .map(|j| job_config(j, &spec, &a.overrides, out))
            .collect();
        assert_eq!(flos.len(), 4);
        assert!(flos
            .iter()
            .all(|c| c.method == Method::Flos && c.n_anomaly == 5));
        let seeds: Vec<u64> = flos.iter().map(|c| c.seed).collect();
        assert_eq!(seeds, [0, 1, 0, 1]);

        // AHL runs in a sweep like any method; its AHL settings are the profile's.
        let a = args(&["--methods", "dra,ahl,ahl-devnet"]);
        let spec = SweepSpec::new(SweepKind::General, &a, vec![LossKind::Deviation], None).unwrap();
        let methods: Vec<Method> = spec
            .units()
            .iter()
            .flatten()
            .map(|j| job_config(j, &spec, &a.overrides, out).method)
            .collect();
        assert!(methods.contains(&Method::Ahl) && methods.contains(&Method::AhlDevNet));

        let err = SweepSpec::new(SweepKind::Loss, &args(&["--methods", "flos"]), vec![], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("flos"), "{err}");
    }

    #[test]
    fn the_ablation_runs_every_table_3_variant_under_its_own_key() {
        let a = args(&[]);
        let spec =
            SweepSpec::new(SweepKind::Ablation, &a, vec![LossKind::Deviation], None).unwrap();
        assert_eq!(spec.shots, [10]);
        assert_eq!(spec.heads.len(), 5);
        let jobs: Vec<Job> = spec.units().into_iter().flatten().collect();
        assert_eq!(jobs.len(), 2 * 5 * 2);
        let out = Path::new("/o");
        let first = &jobs[0];
        assert_eq!(first.subset(), "DRA1A");
        assert_eq!(
            first.key(),
            "synthetic_weave-DRA1A-dra-deviation-10shot-seed0"
        );
        let c = job_config(first, &spec, &a.overrides, out);
        assert_eq!(c.heads.to_string(), "seen");
        let full = jobs.iter().find(|j| j.subset() == "DRA").unwrap();
        assert!(job_config(full, &spec, &a.overrides, out).heads.is_all());
        // Every key is distinct, and the other sweeps keep their keys (no subset).
        let mut keys: Vec<String> = jobs.iter().map(Job::key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), jobs.len());
        let general =
            SweepSpec::new(SweepKind::General, &a, vec![LossKind::Deviation], None).unwrap();
        assert!(general.heads.is_empty());
        assert_eq!(general.units()[0][0].subset(), "");
        let err = SweepSpec::new(
            SweepKind::Ablation,
            &args(&["--methods", "devnet"]),
            vec![LossKind::Deviation],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("--methods"), "{err}");
    }

    #[test]
    fn the_pseudo_study_runs_each_source_on_each_known_class() {
        let a = args(&["--outlier-root", "/data/LAG"]);
        let spec = SweepSpec::new(SweepKind::Pseudo, &a, vec![LossKind::Deviation], None).unwrap();
        assert_eq!(spec.shots, [10]);
        let names: Vec<String> = spec.pseudo.iter().map(PseudoSource::name).collect();
        assert_eq!(names, ["cp-scar", "cp-mix", "cutmix", "oe-LAG"]);
        assert_eq!(spec.pseudo[3].paper_name(), Some("oe-lag"));
        let jobs: Vec<Job> = spec.units().into_iter().flatten().collect();
        // Two data sets with one known class each, four sources, two seeds.
        assert_eq!(jobs.len(), 2 * 4 * 2);
        assert_eq!(jobs[0].subset(), "hole+cp-scar");
        let out = Path::new("/o");
        for job in &jobs {
            let c = job_config(job, &spec, &a.overrides, out);
            match job.pseudo.as_ref().unwrap() {
                PseudoSource::Generated(kind) => {
                    assert_eq!((c.pseudo, c.outlier_root.is_none()), (*kind, true));
                }
                PseudoSource::OutlierExposure(_) => {
                    assert_eq!(c.outlier_root.as_deref(), Some(Path::new("/data/LAG")));
                    assert!(c.pseudo.is_default());
                    c.validate().unwrap();
                }
            }
        }
        // sweep.json round-trips the sources.
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<SweepSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn cross_domain_units_keep_a_source_with_its_fine_tunings() {
        let a = args(&[]);
        let spec = SweepSpec::new(
            SweepKind::CrossDomain,
            &a,
            vec![LossKind::Deviation],
            Some(3),
        )
        .unwrap();
        assert_eq!(spec.shots, [10]);
        let units = spec.units();
        assert_eq!(units.len(), 2 * 2);
        let unit = &units[0];
        assert_eq!(unit.len(), 2);
        assert_eq!(unit[0].source, None);
        assert_eq!(unit[1].source.as_deref(), Some(unit[0].dataset.as_str()));
        let c = job_config(&unit[1], &spec, &a.overrides, Path::new("/o"));
        assert_eq!((c.n_anomaly, c.epochs), (0, 3));
        let init = c.init_model.unwrap();
        assert_eq!(
            init,
            Path::new("/o/runs")
                .join(unit[0].key())
                .join("model.safetensors")
        );
    }
}
