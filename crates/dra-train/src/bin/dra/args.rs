//! The command line: clap's types, whose doc comments are the `--help` text, and what each
//! option means for the library's settings.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use dra_data::datasets::DatasetName;
use dra_data::{OnUnreadable, Setting};
use dra_model::BackboneKind;
use dra_model::Method;
use dra_train::record::{Overrides, Threshold, DEFAULT_TARGET_FPR};
use dra_train::{Profile, TrainConfig};

/// `--method`: clap lists the valid names in `--help` and in its error.
pub(crate) fn method_parser() -> impl clap::builder::TypedValueParser<Value = Method> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Method::ALL.map(Method::name)).map(|name| {
        name.parse::<Method>()
            .expect("clap admits only the names of Method::ALL")
    })
}

/// Open-set supervised anomaly detection with DRA (Ding, Pang & Shen, CVPR 2022).
#[derive(Parser)]
#[command(name = "dra", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Train a model, score the test set and write a run directory.
    Train(Box<TrainArgs>),
    /// Re-score a test set with a trained model; writes scores.csv and metrics.json.
    Eval(EvalArgs),
    /// Score new images with a trained model (CSV on stdout with a decision per image when the
    /// run has a threshold; heat maps with --out).
    Predict(PredictArgs),
    /// Write a trained run as an ONNX model that scores as `dra predict` does, its reference
    /// images baked in and the preprocessing, threshold and provenance in its metadata
    /// (docs/deploy.md).
    Export(ExportArgs),
    /// Set a run's decision threshold from normal images it never saw, at a false-positive
    /// rate (writes threshold.json into the run directory).
    Calibrate(CalibrateArgs),
    /// Data utilities.
    #[command(subcommand)]
    Data(DataCommand),
}

/// Settings a bare weights file cannot carry.
#[derive(Args)]
pub(crate) struct BareModelArgs {
    /// Image size of a bare weights file (a run directory records its own).
    #[arg(long)]
    pub(crate) image_size: Option<u32>,
    /// Reference images per batch for a bare weights file.
    #[arg(long)]
    pub(crate) n_ref: Option<usize>,
    /// Backbone of a bare weights file.
    #[arg(long)]
    pub(crate) backbone: Option<BackboneKind>,
    /// Method of a bare weights file (default dra).
    #[arg(long, value_parser = method_parser())]
    pub(crate) method: Option<Method>,
}

impl BareModelArgs {
    pub(crate) fn fallback(&self) -> TrainConfig {
        let mut c = TrainConfig::paper();
        if let Some(s) = self.image_size {
            c.image_size = s;
        }
        if let Some(n) = self.n_ref {
            c.n_ref = n;
        }
        if let Some(b) = self.backbone {
            c.backbone = b;
        }
        if let Some(m) = self.method {
            c.method = m;
        }
        c
    }
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    /// A run directory, or a weights file with DRA's tensor names (safetensors, or the
    /// official code's model.pkl).
    #[arg(long)]
    pub(crate) model: PathBuf,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Output folder for scores.csv, report.html and metrics.json.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Replace the results that --out holds already (an earlier evaluation's, a run's: its
    /// files are removed first); without it such a folder is refused.
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Fixed references: these images (test transform), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) reference_images: Vec<PathBuf>,
    /// Fixed references: the set stored in the run directory.
    #[arg(long, conflicts_with = "reference_images")]
    pub(crate) fixed_references: bool,
    /// Seed of the random reference draws (the official, default evaluation).
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// The training split to exclude from the test set (bare weights files; a run directory
    /// records its own).
    #[arg(long)]
    pub(crate) n_anomaly: Option<usize>,
    #[arg(long)]
    pub(crate) known_class: Option<String>,
    #[command(flatten)]
    pub(crate) bare: BareModelArgs,
    #[command(flatten)]
    pub(crate) decision: DecisionArgs,
    /// Write each test image's anomaly map (float32 .npy at the model's image size) as
    /// DIR/test/<class>/<name>.npy (DRA only).
    #[arg(long)]
    pub(crate) save_maps: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
}

/// The decision threshold, where a run's own does not do.
#[derive(Args)]
pub(crate) struct DecisionArgs {
    /// Decision threshold: an image is anomalous when its score is above it (default: the
    /// run's threshold.json, from --calibration-fraction or `dra calibrate`).
    #[arg(long)]
    pub(crate) threshold: Option<f64>,
}

impl DecisionArgs {
    /// Sets the model's threshold when one is given.
    pub(crate) fn apply(&self, loaded: &mut dra_train::LoadedModel) {
        if let Some(value) = self.threshold {
            loaded.threshold = Some(Threshold::given(value));
        }
    }
}

#[derive(Args)]
pub(crate) struct CalibrateArgs {
    /// The run directory whose threshold to set.
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// Normal images (files or folders) that training never saw, e.g. a slice of good parts
    /// set aside before training.
    #[arg(long, required = true, value_delimiter = ',')]
    pub(crate) normals: Vec<PathBuf>,
    /// Share of these normal images allowed above the threshold.
    #[arg(long, default_value_t = DEFAULT_TARGET_FPR)]
    pub(crate) target_fpr: f64,
    #[command(flatten)]
    pub(crate) unreadable: UnreadableArgs,
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("written").args(["out", "save_maps"]).multiple(true)))]
pub(crate) struct PredictArgs {
    /// A run directory (its stored references make scores deterministic), or a weights file
    /// with --reference-images.
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// Images or folders of images.
    #[arg(required = true)]
    pub(crate) images: Vec<PathBuf>,
    /// Write a heat-map overlay PNG per image here (`<stem>_heatmap.png`).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Write each image's anomaly map here as float32 `.npy` (`<stem>.npy`, the model's size):
    /// the values `dra eval --save-maps` writes and an exported model's `anomaly_map`.
    #[arg(long)]
    pub(crate) save_maps: Option<PathBuf>,
    /// Replace the files of the same names that --out or --save-maps hold already; without
    /// it such a folder is refused.
    #[arg(long, requires = "written")]
    pub(crate) overwrite: bool,
    /// Reference images instead of the run's stored set, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) reference_images: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) unreadable: UnreadableArgs,
    #[command(flatten)]
    pub(crate) bare: BareModelArgs,
    #[command(flatten)]
    pub(crate) decision: DecisionArgs,
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The run directory (written by dra train; calibrate it first for a threshold).
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// The model file to write (e.g. model.onnx).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Replace the file --out names when it exists; without it an existing file is refused.
    #[arg(long)]
    pub(crate) overwrite: bool,
}

#[derive(Subcommand)]
pub(crate) enum DataCommand {
    /// Count the images per split and class, as the paper's Table 5 (train normal, test
    /// normal, test anomalies per class).
    Inspect(InspectArgs),
    /// Write the embedded synthetic data set (MVTec AD layout).
    Generate {
        /// Folder to write the categories into.
        #[arg(long, default_value = "data/synthetic")]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Which data, as `dra train`, `dra eval` and `dra data inspect` name it.
#[derive(Args)]
pub(crate) struct DataArgs {
    /// Data set: mvtec/<category> (any folder in MVTec AD layout; `mvtec` alone for `data
    /// inspect`: every category), elpv, mastcam, brainmri, headct, hyperkvasir (raw or
    /// converted layout), or synthetic/<category> (generated on first use; categories weave,
    /// granite, washer).
    // Required, but for `dra train --resume`, which conflicts with it (so clap waives it).
    #[arg(long, required = true)]
    pub(crate) dataset: Option<String>,
    /// Folder holding data sets under their default folder names: mvtec_anomaly_detection/,
    /// elpv-dataset/, mastcam/, brain_tumor_dataset/, head_ct/, hyper-kvasir/, AITEX/,
    /// KolektorSDD/, DAGM2007/, synthetic/ (docs/datasets.md).
    #[arg(long)]
    pub(crate) data_root: Option<PathBuf>,
    /// One data set's own folder instead (for mvtec: the folder holding the categories).
    #[arg(long)]
    pub(crate) dataset_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) unreadable: UnreadableArgs,
}

/// What to do with image files that do not decode; shared by every command that reads images.
#[derive(Args)]
pub(crate) struct UnreadableArgs {
    /// Leave out image files that do not decode (each is printed, and recorded in the run's
    /// config.json and metrics.json) instead of stopping with an error that names them.
    #[arg(long)]
    pub(crate) skip_unreadable: bool,
}

impl UnreadableArgs {
    pub(crate) fn policy(&self) -> OnUnreadable {
        if self.skip_unreadable {
            OnUnreadable::Skip
        } else {
            OnUnreadable::Error
        }
    }
}

impl DataArgs {
    /// `--dataset`, which clap requires wherever these arguments are taken without `dra train
    /// --resume`.
    pub(crate) fn dataset(&self) -> &str {
        self.dataset
            .as_deref()
            .expect("clap requires --dataset without --resume")
    }

    /// The parsed name and the folder it resolves to.
    pub(crate) fn resolve(&self) -> Result<(DatasetName, PathBuf)> {
        let name = DatasetName::parse(self.dataset())?;
        let dir = name.resolve(self.data_root.as_deref(), self.dataset_dir.as_deref())?;
        Ok((name, dir))
    }
}

#[derive(Args)]
pub(crate) struct InspectArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Run directory for config.json, model.safetensors, scores.csv, train_log.csv,
    /// report.html, threshold.json (when calibrated) and metrics.json; while training, for its
    /// checkpoint.safetensors too.
    #[arg(long, required_unless_present = "resume")]
    pub(crate) out: Option<PathBuf>,
    /// Go on with the stopped run in this folder from its checkpoint, with the settings and
    /// data it started with (given no others): it ends as it would have uninterrupted, byte
    /// for byte, on the same machine.
    #[arg(long, value_name = "RUN", conflicts_with_all = [
        "dataset", "data_root", "dataset_dir", "skip_unreadable", "out",
        "save_maps", "overwrite", "profile", "method", "ahl_base", "n_anomaly", "known_class",
        "seed",
    ])]
    pub(crate) resume: Option<PathBuf>,
    /// Write the checkpoint every N optimiser steps instead of at the end of each epoch (only
    /// the latest is kept, and it is removed once the run's results are written).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) checkpoint_every: Option<u64>,
    /// Memory for the decoded training images, in MiB (default: room for 2,048 images at the
    /// training size, 96 MiB at 128 px): the images past it are read again from disk as they
    /// are used, with the same batches and results.
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) cache_mb: Option<u64>,
    /// Write each test image's anomaly map (float32 .npy at the model's image size) as
    /// DIR/test/<class>/<name>.npy (DRA only).
    #[arg(long)]
    pub(crate) save_maps: Option<PathBuf>,
    /// Replace the run that --out holds already (its files are removed first). Without it,
    /// a folder that holds a run is refused.
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Defaults: `paper` is the official protocol; `own-data` a detector on one's own images
    /// on a CPU (128 px, 100 steps, a held-out calibration slice); `quick` a pipeline check.
    #[arg(long, value_enum, default_value_t = Profile::Paper)]
    pub(crate) profile: Profile,
    /// Detector: DRA or a competing method of the paper's tables, trained and evaluated the
    /// same way (docs/methods.md).
    #[arg(long, value_parser = method_parser(), default_value = "dra")]
    pub(crate) method: Method,
    /// With `--method ahl`: the model AHL trains on, dra (default) or devnet (the same as
    /// `--method ahl-devnet`).
    #[arg(long, value_parser = ["dra", "devnet"])]
    pub(crate) ahl_base: Option<String>,
    /// Labelled anomalies for training.
    #[arg(long)]
    pub(crate) n_anomaly: Option<usize>,
    /// Hard setting: the labelled anomalies come from this defect class only.
    #[arg(long)]
    pub(crate) known_class: Option<String>,
    /// Seed of training (weights, sampling, augmentation).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    #[command(flatten)]
    pub(crate) overrides: Overrides,
    /// `cpu` or `cuda` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// No progress bar.
    #[arg(long)]
    pub(crate) quiet: bool,
}

impl TrainArgs {
    pub(crate) fn config(&self) -> Result<TrainConfig> {
        let mut c = TrainConfig::for_profile(self.profile);
        c.method = match (self.method, self.ahl_base.as_deref()) {
            (m, None) => m,
            (Method::Ahl | Method::AhlDevNet, Some("devnet")) => Method::AhlDevNet,
            (Method::Ahl | Method::AhlDevNet, Some(_)) => Method::Ahl,
            (m, Some(_)) => {
                anyhow::bail!("--ahl-base: chooses AHL's base model; give --method ahl, not {m}")
            }
        };
        self.overrides.apply(&mut c);
        if let Some(n) = self.n_anomaly {
            c.n_anomaly = n;
        }
        if let Some(seed) = self.seed {
            c.seed = seed;
        }
        if let Some(known_class) = &self.known_class {
            c.setting = Setting::Hard {
                known_class: known_class.clone(),
            };
        }
        Ok(c)
    }
}
