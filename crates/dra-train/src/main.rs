//! `dra`: train DRA on a data set in the MVTec AD layout, and manage the embedded data.

// The doc comments below are clap's `--help` text, printed as written: `<category>` there is a
// placeholder for the user, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use dra_data::{synthetic, Listing, OnUnreadable, Setting, Unreadable};
use dra_model::BackboneKind;
use dra_train::{
    DatasetName, LoadedModel, Method, Overrides, Profile, ReferenceChoice, References, RunRequest,
    TrainConfig,
};

/// `--method`: clap lists the valid names in `--help` and in its error.
fn method_parser() -> impl clap::builder::TypedValueParser<Value = Method> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Method::ALL.map(Method::name)).map(|name| {
        name.parse::<Method>()
            .expect("clap admits only the names of Method::ALL")
    })
}

/// Open-set supervised anomaly detection with DRA (Ding, Pang & Shen, CVPR 2022).
#[derive(Parser)]
#[command(name = "dra", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model, score the test set and write a run directory.
    Train(Box<TrainArgs>),
    /// Re-score a test set with a trained model; writes scores.csv and metrics.json.
    Eval(EvalArgs),
    /// Score new images with a trained model (CSV on stdout; heat maps with --out).
    Predict(PredictArgs),
    /// Data utilities.
    #[command(subcommand)]
    Data(DataCommand),
}

/// Settings a bare weights file cannot carry.
#[derive(Args)]
struct BareModelArgs {
    /// Image size of a bare weights file (a run directory records its own).
    #[arg(long)]
    image_size: Option<u32>,
    /// Reference images per batch for a bare weights file.
    #[arg(long)]
    n_ref: Option<usize>,
    /// Backbone of a bare weights file.
    #[arg(long)]
    backbone: Option<BackboneKind>,
    /// Method of a bare weights file (default dra).
    #[arg(long, value_parser = method_parser())]
    method: Option<Method>,
}

impl BareModelArgs {
    fn fallback(&self) -> TrainConfig {
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
struct EvalArgs {
    /// A run directory, or a weights file with DRA's tensor names (safetensors, or the
    /// official code's model.pkl).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Output folder for scores.csv and metrics.json.
    #[arg(long)]
    out: PathBuf,
    /// Fixed references: these images (test transform), comma-separated.
    #[arg(long, value_delimiter = ',')]
    reference_images: Vec<PathBuf>,
    /// Fixed references: the set stored in the run directory.
    #[arg(long, conflicts_with = "reference_images")]
    fixed_references: bool,
    /// Seed of the random reference draws (the official, default evaluation).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The training split to exclude from the test set (bare weights files; a run directory
    /// records its own).
    #[arg(long)]
    n_anomaly: Option<usize>,
    #[arg(long)]
    known_class: Option<String>,
    #[command(flatten)]
    bare: BareModelArgs,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct PredictArgs {
    /// A run directory (its stored references make scores deterministic), or a weights file
    /// with --reference-images.
    #[arg(long)]
    model: PathBuf,
    /// Images or folders of images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Write a heat-map overlay PNG per image here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Reference images instead of the run's stored set, comma-separated.
    #[arg(long, value_delimiter = ',')]
    reference_images: Vec<PathBuf>,
    #[command(flatten)]
    unreadable: UnreadableArgs,
    #[command(flatten)]
    bare: BareModelArgs,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Subcommand)]
enum DataCommand {
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
struct DataArgs {
    /// Data set: mvtec/<category> (any folder in MVTec AD layout; `mvtec` alone for `data
    /// inspect`: every category), elpv, mastcam, brainmri, headct, hyperkvasir (raw or
    /// converted layout), or synthetic/<category> (generated on first use; categories weave,
    /// granite, washer).
    #[arg(long)]
    dataset: String,
    /// Folder holding data sets under their default folder names: mvtec_anomaly_detection/,
    /// elpv-dataset/, mastcam/, brain_tumor_dataset/, head_ct/, hyper-kvasir/, AITEX/,
    /// KolektorSDD/, DAGM2007/, synthetic/ (docs/datasets.md).
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// One data set's own folder instead (for mvtec: the folder holding the categories).
    #[arg(long)]
    dataset_dir: Option<PathBuf>,
    #[command(flatten)]
    unreadable: UnreadableArgs,
}

/// What to do with image files that do not decode; shared by every command that reads images.
#[derive(Args)]
struct UnreadableArgs {
    /// Leave out image files that do not decode (each is printed, and recorded in the run's
    /// config.json and metrics.json) instead of stopping with an error that names them.
    #[arg(long)]
    skip_unreadable: bool,
}

impl UnreadableArgs {
    fn policy(&self) -> OnUnreadable {
        if self.skip_unreadable {
            OnUnreadable::Skip
        } else {
            OnUnreadable::Error
        }
    }
}

/// Prints each image file that was left out because it does not decode.
fn report_unreadable(files: &[Unreadable]) {
    for f in files {
        eprintln!(
            "left out (does not decode): {}: {}",
            f.path.display(),
            f.reason
        );
    }
}

impl DataArgs {
    /// The parsed name and the folder it resolves to.
    fn resolve(&self) -> Result<(DatasetName, PathBuf)> {
        let name = DatasetName::parse(&self.dataset)?;
        let dir = name.resolve(self.data_root.as_deref(), self.dataset_dir.as_deref())?;
        Ok((name, dir))
    }
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Run directory for config.json, model.safetensors, scores.csv and metrics.json.
    #[arg(long)]
    out: PathBuf,
    /// Defaults: `paper` is the official protocol, `quick` a CPU-sized schedule.
    #[arg(long, value_enum, default_value_t = Profile::Paper)]
    profile: Profile,
    /// Detector: DRA or a competing method of the paper's tables, trained and evaluated the
    /// same way (docs/methods.md).
    #[arg(long, value_parser = method_parser(), default_value = "dra")]
    method: Method,
    /// Labelled anomalies for training.
    #[arg(long)]
    n_anomaly: Option<usize>,
    /// Hard setting: the labelled anomalies come from this defect class only.
    #[arg(long)]
    known_class: Option<String>,
    /// Seed of training (weights, sampling, augmentation).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    overrides: Overrides,
    /// `cpu` or `cuda` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
        let mut c = TrainConfig::for_profile(self.profile);
        c.method = self.method;
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
        c
    }
}

fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0)
            .context("--device cuda: no usable CUDA device (build with --features cuda)"),
        other => bail!("--device: unknown device `{other}`; valid: cpu, cuda"),
    }
}

fn train(args: TrainArgs) -> Result<()> {
    let (name, category_dir) = args.data.resolve()?;
    let request = RunRequest {
        config: args.config(),
        dataset: args.data.dataset.clone(),
        category_dir,
        family: name.family(),
        out_dir: args.out.clone(),
        progress: !args.quiet,
        device: device(&args.device)?,
        on_unreadable: args.data.unreadable.policy(),
    };
    let m = dra_train::train(&request)?;
    report_unreadable(&m.unreadable);
    println!(
        "{} on {}: AUC-ROC {:.4}, AUC-PR {:.4} ({} normal + {} anomalous test images; trained on {} normal + {} labelled anomalies in {:.0} s)",
        args.method,
        args.data.dataset,
        m.auc_roc,
        m.auc_pr,
        m.n_test_normal,
        m.n_test_anomaly,
        m.n_train_normal,
        m.n_train_anomaly,
        m.train_seconds
    );
    if m.ignored > 0 {
        eprintln!(
            "note: {} file(s) or tile(s) of the data folder left out; reasons in {}, files listed by `dra data inspect`",
            m.ignored,
            args.out.join("config.json").display()
        );
    }
    println!("results in {}", args.out.display());
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let device = device(&args.device)?;
    let mut fallback = args.bare.fallback();
    if let Some(n) = args.n_anomaly {
        fallback.n_anomaly = n;
    }
    if let Some(known_class) = &args.known_class {
        fallback.setting = Setting::Hard {
            known_class: known_class.clone(),
        };
    }
    let loaded = LoadedModel::load(&args.model, &fallback, &device)?;
    let (name, category_dir) = args.data.resolve()?;
    let references = if !args.reference_images.is_empty() {
        ReferenceChoice::Paths(args.reference_images.clone())
    } else if args.fixed_references {
        ReferenceChoice::Stored
    } else {
        ReferenceChoice::Random { seed: args.seed }
    };
    let m = dra_train::evaluate(
        &loaded,
        name.family(),
        &category_dir,
        args.data.unreadable.policy(),
        &references,
        &args.out,
        &device,
    )?;
    report_unreadable(&m.unreadable);
    println!(
        "{}: AUC-ROC {:.4}, AUC-PR {:.4} ({} normal + {} anomalous test images); results in {}",
        args.data.dataset,
        m.auc_roc,
        m.auc_pr,
        m.n_test_normal,
        m.n_test_anomaly,
        args.out.display()
    );
    Ok(())
}

fn predict(args: PredictArgs) -> Result<()> {
    let device = device(&args.device)?;
    let loaded = LoadedModel::load(&args.model, &args.bare.fallback(), &device)?;
    let mut references = if args.reference_images.is_empty() {
        loaded.stored_references()?
    } else {
        References::from_paths(&args.reference_images, loaded.config.image_size)?
    };
    let listing = Listing::of_inputs(&args.images)?.require(args.unreadable.policy())?;
    report_unreadable(&listing.unreadable);
    let images = listing.paths();
    let rows = dra_train::predict(
        &loaded,
        &images,
        &mut references,
        args.out.as_deref(),
        &device,
    )?;
    print!("{}", dra_train::predictions_csv(&rows));
    if let Some(out) = &args.out {
        eprintln!("heat maps in {}", out.display());
    }
    Ok(())
}

/// One line of `dra data inspect`.
#[derive(serde::Serialize)]
struct Count {
    dataset: String,
    subset: String,
    split: &'static str,
    class: String,
    count: usize,
}

/// One file, folder or rectangle a loader left out, for `dra data inspect`.
#[derive(serde::Serialize)]
struct Left {
    subset: String,
    /// The path, with `#x,y,w,h` for a rectangle of an image.
    path: String,
    reason: String,
}

/// The left-out items grouped by subset and reason, in order of first appearance:
/// (subset, reason, count, first path).
fn group_left(left: &[Left]) -> Vec<(&str, &str, usize, &str)> {
    let mut groups: Vec<(&str, &str, usize, &str)> = Vec::new();
    for l in left {
        match groups
            .iter_mut()
            .find(|g| g.0 == l.subset && g.1 == l.reason.as_str())
        {
            Some(g) => g.2 += 1,
            None => groups.push((&l.subset, &l.reason, 1, &l.path)),
        }
    }
    groups
}

fn inspect(args: InspectArgs) -> Result<()> {
    // `mvtec` alone: every category folder of the MVTec root.
    let data = &args.data;
    let policy = data.unreadable.policy();
    let mut left = Vec::new();
    let subsets: Vec<(String, dra_data::Category)> = if data.dataset == "mvtec" {
        let root = match (&data.dataset_dir, &data.data_root) {
            (Some(d), _) => d.clone(),
            (None, Some(r)) => r.join(dra_train::MVTEC_FOLDER),
            (None, None) => bail!("--data-root: give --data-root DIR or --dataset-dir DIR"),
        };
        let (folders, beside) = dra_data::datasets::category_folders(&root)?;
        left.extend(beside.iter().map(|i| Left {
            subset: "mvtec".into(),
            path: i.image.to_string(),
            reason: i.reason.into(),
        }));
        folders
            .into_iter()
            .map(|d| {
                let name = d
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                Ok((name, dra_data::Category::open(&d, policy)?))
            })
            .collect::<Result<_>>()?
    } else {
        let (name, dir) = data.resolve()?;
        let subset = match &name {
            DatasetName::Mvtec(c) | DatasetName::Synthetic(c) => c.clone(),
            DatasetName::Family(f) => f.name().to_string(),
        };
        vec![(
            subset,
            dra_train::load_category(name.family(), &dir, policy)?,
        )]
    };
    let mut counts = Vec::new();
    for (subset, cat) in &subsets {
        let row = |split, class: &str, count| Count {
            dataset: data.dataset.clone(),
            subset: subset.clone(),
            split,
            class: class.to_string(),
            count,
        };
        counts.push(row("train", "good", cat.train_good.len()));
        counts.push(row("test", "good", cat.test_good.len()));
        for (class, files) in &cat.defects {
            counts.push(row("test", class, files.len()));
        }
    }
    // Nothing is skipped in silence: what the loaders left out, and why; with
    // --skip-unreadable, the files that do not decode, with the decoder's reason.
    for (subset, cat) in &subsets {
        left.extend(cat.ignored.iter().map(|i| Left {
            subset: subset.clone(),
            path: i.image.to_string(),
            reason: i.reason.into(),
        }));
    }
    let unreadable: Vec<Left> = subsets
        .iter()
        .flat_map(|(subset, cat)| {
            cat.unreadable.iter().map(|u| Left {
                subset: subset.clone(),
                path: u.path.display().to_string(),
                reason: u.reason.clone(),
            })
        })
        .collect();
    let groups = group_left(&left);
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "counts": counts,
                "ignored": left,
                "unreadable": unreadable,
            }))?
        ),
        Format::Csv => {
            println!("dataset,subset,split,class,count");
            for c in &counts {
                println!(
                    "{},{},{},{},{}",
                    c.dataset, c.subset, c.split, c.class, c.count
                );
            }
            for (subset, reason, n, first) in &groups {
                eprintln!("ignored: {subset}: {n} × {reason} (first: {first})");
            }
            for u in &unreadable {
                eprintln!("unreadable: {}: {}: {}", u.subset, u.path, u.reason);
            }
        }
        Format::Table => {
            println!("| subset | train normal | test normal | test anomaly | anomaly classes |\n|---|---|---|---|---|");
            for (subset, cat) in &subsets {
                println!(
                    "| {subset} | {} | {} | {} | {} |",
                    cat.train_good.len(),
                    cat.test_good.len(),
                    cat.n_anomalies(),
                    cat.defects
                        .iter()
                        .map(|(c, f)| format!("{c} {}", f.len()))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if !groups.is_empty() {
                println!("\nIgnored (`--format json` lists every one):\n\n| subset | count | reason | first |\n|---|---|---|---|");
                for (subset, reason, n, first) in &groups {
                    println!("| {subset} | {n} | {reason} | {first} |");
                }
            }
            if !unreadable.is_empty() {
                println!("\nUnreadable, left out by --skip-unreadable:\n\n| subset | file | reason |\n|---|---|---|");
                for u in &unreadable {
                    println!("| {} | {} | {} |", u.subset, u.path, u.reason);
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // First, while this is the only thread; untuned, training is only slower.
    if let Err(e) = dra_model::configure_cpu_runtime() {
        eprintln!("warning: {e}");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train(*args),
        Command::Eval(args) => eval(args),
        Command::Predict(args) => predict(args),
        Command::Data(DataCommand::Inspect(args)) => inspect(args),
        Command::Data(DataCommand::Generate { out, seed }) => {
            let spec = synthetic::SyntheticSpec {
                seed,
                ..Default::default()
            };
            synthetic::ensure(&out, &spec)
                .map(|dirs| {
                    for d in dirs {
                        println!("{}", d.display());
                    }
                })
                .map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
