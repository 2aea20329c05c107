//! The benchmark sweeps: a grid of training runs over data sets × subsets × losses × shots ×
//! seeds, run in a deterministic order, sharded, resumable, recorded in `OUT/runs.csv` and
//! rendered as the paper's tables.
//!
//! Resumption rests on three facts: a run directory's `metrics.json` is written last (so its
//! presence marks a finished run), `runs.csv` is replaced atomically, and a grid cell is skipped
//! only when its row carries the same configuration hash as the run the command would start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use dra_data::{datasets, synthetic, Setting};
use dra_model::LossKind;
use dra_train::{
    DatasetName, Method, Metrics, Overrides, Profile, RunRecord, RunRequest, TrainConfig,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::runs::{self, run_key, RunRow};

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
const PAPER_GENERAL: [&str; 9] = [
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

/// The hard-setting known classes of the embedded default data: one per category, so that the
/// default sweep stays within minutes on two cores.
const SYNTHETIC_HARD: [(&str, &str); 3] = [
    ("synthetic/weave", "hole"),
    ("synthetic/granite", "crack"),
    ("synthetic/washer", "dent"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SweepKind {
    General,
    Hard,
    Loss,
    CrossDomain,
}

impl SweepKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::General => "bench-general",
            Self::Hard => "bench-hard",
            Self::Loss => "bench-loss",
            Self::CrossDomain => "bench-cross-domain",
        }
    }

    fn hard(self) -> bool {
        matches!(self, Self::Hard | Self::Loss)
    }
}

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
    /// Comma-separated methods: dra, devnet, deepsad, minns, flos, saoe (docs/methods.md); one
    /// column each in the tables.
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
}

impl Job {
    pub fn subset(&self) -> &str {
        self.known_class
            .as_deref()
            .or(self.source.as_deref())
            .unwrap_or("")
    }

    pub fn key(&self) -> String {
        run_key(
            &self.dataset,
            self.subset(),
            &self.method,
            &self.loss.to_string(),
            self.shots,
            self.seed,
        )
    }

    fn describe(&self) -> String {
        let mut s = self.dataset.clone();
        if let Some(c) = &self.known_class {
            s += &format!(" known {c}");
        }
        if let Some(source) = &self.source {
            s += &format!(" fine-tuned from {source}");
        }
        let method: Method = self.method.parse().expect("names of Method::ALL");
        if method.takes_loss_option() {
            s += &format!(" {}", self.loss);
        }
        format!("{s} {method} {}-shot seed {}", self.shots, self.seed)
    }
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
        if kind == SweepKind::Loss {
            if let Some(m) = methods.iter().find(|m| !m.takes_loss_option()) {
                bail!("--methods: {m} has a loss of its own; bench-loss compares losses");
            }
        }
        let shots = match (&args.shots[..], kind) {
            ([], SweepKind::CrossDomain) => vec![10],
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
        } else if kind.hard() {
            datasets::HARD_SUBSETS
                .iter()
                .map(|(d, _)| d.to_string())
                .collect()
        } else {
            PAPER_GENERAL.iter().map(|d| d.to_string()).collect()
        };
        let default_root = crate::workspace_root().join("data");
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
        })
    }

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
        for (e, dir) in &present {
            let classes: Vec<Option<String>> = if self.sweep.hard() {
                e.known_classes.iter().cloned().map(Some).collect()
            } else {
                vec![None]
            };
            for known_class in &classes {
                for &loss in &self.losses {
                    for method in &self.methods {
                        for &shots in &self.shots {
                            for seed in 0..self.runs {
                                let job = Job {
                                    dataset: e.dataset.clone(),
                                    dir: (*dir).clone(),
                                    known_class: known_class.clone(),
                                    source: None,
                                    loss,
                                    method: method.clone(),
                                    shots,
                                    seed,
                                };
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
                    }
                }
            }
        }
        units
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

/// The known classes of a data set's hard-setting subsets.
fn hard_classes(dataset: &str) -> Result<Vec<String>> {
    if let Some(classes) = datasets::hard_subsets(dataset) {
        return Ok(classes.iter().map(|c| c.to_string()).collect());
    }
    if let Some((_, class)) = SYNTHETIC_HARD.iter().find(|(d, _)| *d == dataset) {
        return Ok(vec![class.to_string()]);
    }
    bail!(
        "--datasets: `{dataset}` has no hard-setting subsets in the paper; name one as {dataset}:CLASS"
    )
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

/// The recorded metrics when `dir` holds a finished run of exactly this configuration.
fn finished(dir: &Path, dataset: &str, config: &TrainConfig) -> Option<Metrics> {
    let record: RunRecord =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).ok()?).ok()?;
    if &record.config != config || record.dataset != dataset {
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).ok()?).ok()
}

fn row_for(
    kind: SweepKind,
    job: &Job,
    metrics: &Metrics,
    hash: String,
    run_dir: PathBuf,
) -> RunRow {
    RunRow {
        sweep: kind.name().into(),
        dataset: job.dataset.clone(),
        subset: job.subset().into(),
        setting: match (&job.known_class, &job.source) {
            (Some(_), _) => "hard",
            (None, Some(_)) => "cross-domain",
            (None, None) => "general",
        }
        .into(),
        known_class: job.known_class.clone().unwrap_or_default(),
        shots: job.shots,
        loss: job.loss.to_string(),
        method: job.method.clone(),
        seed: job.seed,
        auc_roc: metrics.auc_roc,
        auc_pr: metrics.auc_pr,
        seconds: metrics.total_seconds,
        config_hash: hash,
        run_dir,
    }
}

/// Runs this shard's part of the sweep and renders the tables from everything in `out`.
pub fn run(
    kind: SweepKind,
    args: &SweepArgs,
    losses: Vec<LossKind>,
    fine_tune_epochs: Option<usize>,
) -> Result<()> {
    let spec = SweepSpec::new(kind, args, losses, fine_tune_epochs)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::workspace_root().join("results").join(kind.name()));
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    write_spec(&out, &spec)?;

    let units = spec.units();
    let n_all: usize = units.iter().map(Vec::len).sum();
    let shard = args.shard;
    let jobs: Vec<&Job> = units
        .iter()
        .enumerate()
        .filter(|(i, _)| i % shard.count == shard.index - 1)
        .flat_map(|(_, unit)| unit)
        .collect();
    let absent = spec.absent();
    println!(
        "{}: {} data set(s) present{} × shots {:?} × {} run(s): {} runs{}, profile {}, results in {}",
        kind.name(),
        spec.entries.len() - absent.len(),
        if absent.is_empty() {
            String::new()
        } else {
            format!(" ({} absent: {})", absent.len(), absent.join(", "))
        },
        spec.shots,
        spec.runs,
        n_all,
        if shard.count > 1 {
            format!(" (this shard {shard}: {})", jobs.len())
        } else {
            String::new()
        },
        spec.profile,
        out.display()
    );

    // What is already done: rows with this very configuration, or finished run directories whose
    // row was lost to a kill between the two writes.
    let existing: BTreeMap<String, RunRow> = runs::read(&out.join("runs.csv"))?
        .into_iter()
        .map(|r| (r.key(), r))
        .collect();
    let mut pending = Vec::new();
    let mut done = 0;
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    for job in jobs {
        let config = job_config(job, &spec, &args.overrides, &out);
        let parent = job.source.as_ref().map(|_| {
            let key = config
                .init_model
                .as_ref()
                .and_then(|m| m.parent()?.file_name());
            let key = key
                .map(|k| k.to_string_lossy().into_owned())
                .unwrap_or_default();
            hashes.get(&key).cloned().unwrap_or_default()
        });
        let hash = config_hash(&job.dataset, job.subset(), &config, parent.as_deref());
        let key = job.key();
        hashes.insert(key.clone(), hash.clone());
        let dir = out.join("runs").join(&key);
        // A source's model must still be on disk for its fine-tuning runs.
        let model_needed = spec.sweep == SweepKind::CrossDomain && job.source.is_none();
        let model_ok = !model_needed || dir.join("model.safetensors").is_file();
        if model_ok && existing.get(&key).is_some_and(|r| r.config_hash == hash) {
            done += 1;
            continue;
        }
        if let Some(m) = finished(&dir, &job.dataset, &config).filter(|_| model_ok) {
            runs::upsert(&out, row_for(kind, job, &m, hash, dir))?;
            done += 1;
            continue;
        }
        pending.push((job, config, hash, dir));
    }
    if done > 0 {
        println!("{done} run(s) already done, {} to run", pending.len());
    }

    let bar = progress_bar(pending.len() as u64);
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut failed_keys: Vec<String> = Vec::new();
    for (i, (job, config, hash, dir)) in pending.iter().enumerate() {
        bar.set_message(job.describe());
        let source_failed = config
            .init_model
            .as_ref()
            .and_then(|m| m.parent()?.file_name())
            .is_some_and(|k| failed_keys.iter().any(|f| k == f.as_str()));
        if source_failed {
            failures.push(format!("{}: its source run failed", job.describe()));
            bar.inc(1);
            continue;
        }
        let request = RunRequest {
            config: config.clone(),
            dataset: job.dataset.clone(),
            category_dir: job.dir.clone(),
            family: DatasetName::parse(&job.dataset)?.family(),
            out_dir: dir.clone(),
            progress: false,
            device: candle_core::Device::Cpu,
            on_unreadable: if args.skip_unreadable {
                dra_data::OnUnreadable::Skip
            } else {
                dra_data::OnUnreadable::Error
            },
        };
        match dra_train::train(&request) {
            Ok(m) => {
                runs::upsert(&out, row_for(kind, job, &m, hash.clone(), dir.clone()))?;
                bar.suspend(|| {
                    for u in &m.unreadable {
                        println!(
                            "left out (does not decode): {}: {}",
                            u.path.display(),
                            u.reason
                        );
                    }
                    println!(
                        "[{}/{}] {}: AUC-ROC {:.3}, AUC-PR {:.3} in {:.0} s (elapsed {})",
                        i + 1,
                        pending.len(),
                        job.describe(),
                        m.auc_roc,
                        m.auc_pr,
                        m.total_seconds,
                        clock(started.elapsed())
                    )
                });
            }
            Err(e) => {
                bar.suspend(|| {
                    println!(
                        "[{}/{}] {}: FAILED: {e}",
                        i + 1,
                        pending.len(),
                        job.describe()
                    )
                });
                failures.push(format!("{}: {e}", job.describe()));
                failed_keys.push(job.key());
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    crate::render::render_dir(&out)?;
    if !failures.is_empty() {
        bail!(
            "{} run(s) failed (the table shows the others):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:30} run {pos}/{len} ETA {eta_precise} {msg}",
        )
        .expect("the template is valid"),
    );
    bar.enable_steady_tick(Duration::from_secs(1));
    bar
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

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
    fn shards_partition_the_grid() {
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        for bad in ["0/2", "3/2", "1", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

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

    fn args(extra: &[&str]) -> SweepArgs {
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

        let err = SweepSpec::new(SweepKind::Loss, &args(&["--methods", "flos"]), vec![], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("flos"), "{err}");
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

    #[test]
    fn hard_classes_come_from_the_paper_or_the_user() {
        assert_eq!(hard_classes("elpv").unwrap(), ["mono", "poly"]);
        assert_eq!(hard_classes("synthetic/weave").unwrap(), ["hole"]);
        let err = hard_classes("mvtec/bottle").unwrap_err().to_string();
        assert!(err.contains("mvtec/bottle:CLASS"), "{err}");
    }
}
