//! `cargo xtask probe`: a fingerprint of everything the numbers of dra-rs come out of, so that a
//! refactor can show that it changed no result bit for bit.
//!
//! Two parts, each a list of `key sha256` lines:
//! - **steps**: one training step of every method's model on each backbone, in f32 and f64, with
//!   every kernel setting (candle's stock ops, the custom kernels with Winograd off, F(2×2),
//!   F(4×4), and F(4×4) with the portable arithmetic): the loss and its terms, every gradient,
//!   every tensor after clipped Adam, and the eval-mode scores and maps of the updated model;
//! - **runs**: `dra train` end to end on a small generated data set for every method (AHL on
//!   both bases) and both backbones, with a calibration slice and maps, then `evaluate` (random
//!   and stored references), `predict` with heat maps and `calibrate` on the result: every file
//!   written, with what is not a result (seconds, the folder the probe ran in) taken out.
//!
//! The hashes depend on the CPU's vector units (gemm's kernel tier; the `f4-portable` setting
//! excepted), which the header records, and `--against` refuses a file made on other ones.
//! They must not depend on the number of threads: `--threads N` runs everything on a pool of
//! N, and the files for 1, 2 and 3 threads must be the same (the thread count is on a header
//! line of its own that `--against` does not read). The use: `cargo xtask probe --out
//! before.txt` on the old commit, `cargo xtask probe --against before.txt` on the new one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dra_data::synthetic::{self, SyntheticSpec};
use dra_model::ops::{Arithmetic, KernelTier};
use dra_model::{
    reset_parameters, BackboneKind, Detector, ImageBatch, Kernels, LossKind, Method, ModelConfig,
    Target, Winograd,
};
use dra_train::engine::{trainable, Adam, AdamConfig};
use rand::SeedableRng;
use sha2::{Digest, Sha256};

/// `cargo xtask probe` options.
#[derive(clap::Args)]
pub struct ProbeArgs {
    /// Write the fingerprint here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compare with a fingerprint written by an earlier `--out`: lists every key that differs
    /// and fails when one does.
    #[arg(long)]
    against: Option<PathBuf>,
    /// Only the model steps (seconds), not the runs (about a minute).
    #[arg(long)]
    steps_only: bool,
    /// Where the runs' data and folders go [default: a new temporary folder].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Run everything on a pool of this many threads [default: rayon's, one per core]: the
    /// hashes must not depend on it.
    #[arg(long)]
    threads: Option<usize>,
}

pub fn probe(args: &ProbeArgs) -> Result<()> {
    match args.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .context("--threads: cannot start the pool")?
            .install(|| fingerprint(args)),
        None => fingerprint(args),
    }
}

fn fingerprint(args: &ProbeArgs) -> Result<()> {
    let mut lines = BTreeMap::new();
    steps(&mut lines)?;
    if !args.steps_only {
        let tmp;
        let work = match &args.work_dir {
            Some(dir) => dir.clone(),
            None => {
                tmp = tempfile_dir()?;
                tmp.clone()
            }
        };
        let result = runs(&work, &mut lines);
        if args.work_dir.is_none() {
            let _ = std::fs::remove_dir_all(&work);
        }
        result?;
    }
    let text = render(&header(), &lines);
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("{}", out.display()))?;
        println!("{} fingerprints written to {}", lines.len(), out.display());
    }
    if let Some(against) = &args.against {
        let old =
            std::fs::read_to_string(against).with_context(|| format!("{}", against.display()))?;
        compare(&old, &text, against)?;
    }
    if args.out.is_none() && args.against.is_none() {
        print!("{text}");
    }
    Ok(())
}

/// What the hashes depend on besides the code: the kernel tier this process runs (the CPU's,
/// or `DRA_KERNEL_TIER`'s cap). The thread count is recorded on a line of its own, which
/// `compare` does not read: no result may depend on it.
fn header() -> String {
    format!(
        "# dra-rs probe; cpu: {}\n# threads: {}",
        KernelTier::allowed(),
        rayon::current_num_threads()
    )
}

fn render(header: &str, lines: &BTreeMap<String, String>) -> String {
    let mut text = format!("{header}\n");
    for (k, v) in lines {
        let _ = writeln!(text, "{k} {v}");
    }
    text
}

/// Fails, listing the keys, when `new` differs from `old` (the same header required).
fn compare(old: &str, new: &str, old_path: &Path) -> Result<()> {
    let parse = |text: &str| -> (String, BTreeMap<String, String>) {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default().to_string();
        let map = lines
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (header, map)
    };
    let (old_header, old) = parse(old);
    let (new_header, new) = parse(new);
    if old_header != new_header {
        bail!(
            "{}: made under other conditions ({old_header:?}, here {new_header:?}); the hashes \
             depend on the CPU's vector units",
            old_path.display()
        );
    }
    let mut differ = Vec::new();
    for key in old
        .keys()
        .chain(new.keys().filter(|k| !old.contains_key(*k)))
    {
        match (old.get(key), new.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => differ.push(format!("changed: {key}")),
            (Some(_), None) => differ.push(format!("gone: {key}")),
            (None, _) => differ.push(format!("new: {key}")),
        }
    }
    if differ.is_empty() {
        println!(
            "identical: {} fingerprints equal to {}'s",
            new.len(),
            old_path.display()
        );
        Ok(())
    } else {
        for d in &differ {
            println!("{d}");
        }
        bail!(
            "{} of {} fingerprints differ from {}",
            differ.len(),
            old.len().max(new.len()),
            old_path.display()
        )
    }
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("dra-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    Ok(dir)
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tensor's dtype, shape and values (little-endian bytes).
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let mut out = format!("{:?}{:?}", t.dtype(), t.dims()).into_bytes();
    let flat = t.flatten_all()?;
    match t.dtype() {
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        _ => flat
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
    }
    Ok(out)
}

const STEP_SIZE: usize = 64;
const TARGETS: [Target; 4] = [
    Target::Normal,
    Target::Anomaly,
    Target::PseudoAnomaly,
    Target::Normal,
];

/// One training step and a scoring pass of every model, dtype and kernel setting.
fn steps(lines: &mut BTreeMap<String, String>) -> Result<()> {
    let methods = [
        Method::Dra,
        Method::DevNet,
        Method::DeepSad,
        Method::Minns,
        Method::Flos,
        Method::Saoe,
    ];
    let kernels = [
        ("stock", Kernels::Stock),
        (
            "off",
            Kernels::Custom {
                winograd: Winograd::Off,
                arithmetic: Arithmetic::Native,
            },
        ),
        (
            "f2",
            Kernels::Custom {
                winograd: Winograd::F2,
                arithmetic: Arithmetic::Native,
            },
        ),
        (
            "f4",
            Kernels::Custom {
                winograd: Winograd::F4,
                arithmetic: Arithmetic::Native,
            },
        ),
        (
            "f4-portable",
            Kernels::Custom {
                winograd: Winograd::F4,
                arithmetic: Arithmetic::Portable,
            },
        ),
    ];
    for method in methods {
        for backbone in [BackboneKind::Resnet18, BackboneKind::MobilenetV2] {
            for dtype in [DType::F32, DType::F64] {
                for (kname, k) in kernels {
                    let key = format!("step/{method}/{backbone}/{dtype:?}/{kname}");
                    eprintln!("probe {key}");
                    step(method, backbone, dtype, k, &key, lines).with_context(|| key.clone())?;
                }
            }
        }
    }
    Ok(())
}

fn step(
    method: Method,
    backbone: BackboneKind,
    dtype: DType,
    kernels: Kernels,
    key: &str,
    lines: &mut BTreeMap<String, String>,
) -> Result<()> {
    let device = Device::Cpu;
    let n_ref = if method.uses_references() { 2 } else { 0 };
    let config = ModelConfig {
        n_ref: n_ref.max(1),
        backbone,
        kernels,
        ..Default::default()
    };
    let varmap = VarMap::new();
    let model = Detector::new(
        method,
        &config,
        VarBuilder::from_varmap(&varmap, dtype, &device),
    )?;
    reset_parameters(&varmap, 7)?;
    let shape = (n_ref + TARGETS.len(), 3, STEP_SIZE, STEP_SIZE);
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let x: Vec<f64> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f64 / 500.0 - 1.0)
        .collect();
    let x = Tensor::from_vec(x, shape, &device)?.to_dtype(dtype)?;
    let batch = ImageBatch::with_references(x, n_ref)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let loss = model.loss_terms(&batch, &TARGETS, LossKind::Deviation, &mut rng)?;
    let mut bytes = tensor_bytes(&loss.total)?;
    for t in loss.heads.iter().flatten() {
        bytes.extend(tensor_bytes(t)?);
    }
    lines.insert(format!("{key}/loss"), sha(&bytes));
    let grads = loss.total.backward()?;
    let mut named: Vec<(String, Tensor)> = varmap
        .data()
        .lock()
        .expect("var map lock")
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut bytes = Vec::new();
    for (name, t) in &named {
        if let Some(g) = grads.get(t) {
            bytes.extend(name.as_bytes());
            bytes.extend(tensor_bytes(g)?);
        }
    }
    lines.insert(format!("{key}/gradients"), sha(&bytes));
    let adam = AdamConfig {
        weight_decay: 1e-5,
        clip_norm: Some(1.0),
        ..Default::default()
    };
    Adam::new(trainable(&varmap), adam)?.step(&grads, 2e-4)?;
    let mut bytes = Vec::new();
    for (name, t) in &named {
        bytes.extend(name.as_bytes());
        bytes.extend(tensor_bytes(t)?);
    }
    lines.insert(format!("{key}/weights"), sha(&bytes));
    let detached = named.iter().map(|(n, t)| (n.clone(), t.detach())).collect();
    let eval = Detector::new(
        method,
        &config,
        VarBuilder::from_tensors(detached, dtype, &device),
    )?;
    let (scores, maps) = eval.scores_with_maps(&batch)?;
    let mut bytes = tensor_bytes(&scores.score)?;
    for t in scores.heads.iter().flatten() {
        bytes.extend(tensor_bytes(t)?);
    }
    if let Some(maps) = maps {
        bytes.extend(tensor_bytes(&maps)?);
    }
    lines.insert(format!("{key}/scores"), sha(&bytes));
    Ok(())
}

/// The data set every run trains on.
const RUN_SPEC: SyntheticSpec = SyntheticSpec {
    image_size: 64,
    n_train: 24,
    n_test_good: 6,
    n_per_defect: 3,
    seed: 5,
};

fn run_config(method: Method, backbone: BackboneKind) -> dra_train::TrainConfig {
    let mut c = dra_train::TrainConfig::quick();
    c.method = method;
    c.backbone = backbone;
    c.batch_size = 6;
    c.n_ref = 2;
    c.epochs = 2;
    c.steps_per_epoch = 2;
    c.lr_step_size = 1;
    c.n_anomaly = 3;
    c.eval_batch_size = 5;
    c.calibration_fraction = 0.25;
    c.seed = 9;
    if method.is_ahl() {
        c.ahl = Some(dra_train::record::AhlConfig {
            epochs: 3,
            clusters: 2,
            inner_steps: 2,
            query_batches: 2,
            window: 2,
            ..Default::default()
        });
    }
    c
}

/// `dra train`, `eval`, `predict` and `calibrate` on a small generated data set.
fn runs(work: &Path, lines: &mut BTreeMap<String, String>) -> Result<()> {
    let data = work.join("data");
    synthetic::ensure(&data, &RUN_SPEC)?;
    let category = data.join("washer");
    let device = Device::Cpu;
    for method in Method::ALL {
        for backbone in [BackboneKind::Resnet18, BackboneKind::MobilenetV2] {
            let key = format!("run/{method}/{backbone}");
            eprintln!("probe {key}");
            let out = work.join(key.replace('/', "-"));
            let maps = work.join(format!("{}-maps", key.replace('/', "-")));
            let has_maps = method.base() == Method::Dra;
            let config = run_config(method, backbone);
            dra_train::train(&dra_train::RunRequest {
                config: config.clone(),
                dataset: "synthetic/washer".into(),
                category_dir: category.clone(),
                family: dra_data::datasets::Family::Mvtec,
                out_dir: out.clone(),
                device: device.clone(),
                on_unreadable: dra_data::OnUnreadable::Error,
                save_maps: has_maps.then(|| maps.clone()),
                control: dra_train::RunControl {
                    overwrite: false,
                    ..Default::default()
                },
            })
            .with_context(|| key.clone())?;
            fingerprint_dir(&out, work, &format!("{key}/train"), lines)?;
            if has_maps {
                fingerprint_dir(&maps, work, &format!("{key}/train-maps"), lines)?;
            }
            let loaded = dra_train::LoadedModel::load(&out, &config, &device)?;
            for (name, choice) in [
                (
                    "eval-random",
                    dra_train::ReferenceChoice::Random { seed: 4 },
                ),
                ("eval-stored", dra_train::ReferenceChoice::Stored),
            ] {
                let eval_out = work.join(format!("{}-{name}", key.replace('/', "-")));
                let eval_maps = work.join(format!("{}-{name}-maps", key.replace('/', "-")));
                dra_train::evaluate(
                    &loaded,
                    dra_data::datasets::Family::Mvtec,
                    &category,
                    dra_data::OnUnreadable::Error,
                    &choice,
                    &eval_out,
                    has_maps.then_some(eval_maps.as_path()),
                    false,
                    &device,
                )
                .with_context(|| format!("{key}/{name}"))?;
                fingerprint_dir(&eval_out, work, &format!("{key}/{name}"), lines)?;
                if has_maps {
                    fingerprint_dir(&eval_maps, work, &format!("{key}/{name}-maps"), lines)?;
                }
            }
            let images: Vec<PathBuf> = ["good", "scratch"]
                .iter()
                .flat_map(|class| {
                    let dir = category.join("test").join(class);
                    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path())
                        .collect();
                    files.sort();
                    files
                })
                .collect();
            let heatmaps = work.join(format!("{}-heatmaps", key.replace('/', "-")));
            let mut refs = loaded.stored_references()?;
            let rows = dra_train::predict(
                &loaded,
                &images,
                &mut refs,
                dra_train::PredictOutputs {
                    heatmaps: has_maps.then_some(heatmaps.as_path()),
                    ..Default::default()
                },
                &device,
            )?;
            let csv = dra_train::record::predictions_csv(&rows, loaded.threshold.as_ref());
            lines.insert(format!("{key}/predict"), sha(strip(&csv, work).as_bytes()));
            if has_maps {
                fingerprint_dir(&heatmaps, work, &format!("{key}/predict-heatmaps"), lines)?;
            }
            let (threshold, _) = dra_train::calibrate(
                &loaded,
                &[category.join("test/good")],
                0.1,
                dra_data::OnUnreadable::Error,
                &device,
            )?;
            lines.insert(
                format!("{key}/calibrate"),
                sha(strip(&serde_json::to_string(&threshold)?, work).as_bytes()),
            );
        }
    }
    Ok(())
}

/// The probe's folder, wherever it lies, written as `<work>`.
fn strip(text: &str, work: &Path) -> String {
    text.replace(&*work.to_string_lossy(), "<work>")
}

/// One line per file of `dir` (recursively), its contents with what is not a result taken
/// out: timings in `metrics.json`, `train_log.csv` and `report.html`, and the probe's folder.
fn fingerprint_dir(
    dir: &Path,
    work: &Path,
    key: &str,
    lines: &mut BTreeMap<String, String>,
) -> Result<()> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        bail!("{}: the run wrote nothing", dir.display());
    }
    for path in files {
        let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
        let bytes = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let hashed = match name {
            "metrics.json" => {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes)?;
                if let Some(map) = v.as_object_mut() {
                    map.retain(|k, _| !k.ends_with("_seconds"));
                }
                strip(&serde_json::to_string(&v)?, work).into_bytes()
            }
            "train_log.csv" => String::from_utf8_lossy(&bytes)
                .lines()
                .map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head))
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes(),
            "report.html" => strip_report(&String::from_utf8_lossy(&bytes), work).into_bytes(),
            _ if name.ends_with(".json") || name.ends_with(".csv") => {
                strip(&String::from_utf8_lossy(&bytes), work).into_bytes()
            }
            _ => bytes,
        };
        lines.insert(format!("{key}/{rel}"), sha(&hashed));
    }
    Ok(())
}

/// `report.html` without its timings (the "… s" of the run's figures) and the probe's folder.
fn strip_report(html: &str, work: &Path) -> String {
    let text = strip(html, work);
    // Seconds are written as a number followed by " s"; replace every such number.
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find(" s<") {
        let (head, tail) = rest.split_at(i);
        let cut = head
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
            .len();
        out.push_str(&head[..cut]);
        out.push_str("<t> s<");
        rest = &tail[3..];
    }
    out.push_str(rest);
    out
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_lists_what_differs_and_needs_the_same_conditions() {
        let a: BTreeMap<String, String> = [("x", "1"), ("y", "2")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let mut b = a.clone();
        let path = Path::new("old.txt");
        compare(&render("# h", &a), &render("# h", &b), path).unwrap();
        b.insert("y".into(), "3".into());
        b.insert("z".into(), "4".into());
        let err = compare(&render("# h", &a), &render("# h", &b), path).unwrap_err();
        assert!(
            err.to_string().starts_with("2 of 3 fingerprints differ"),
            "{err}"
        );
        let err = compare(&render("# h", &a), &render("# g", &a), path).unwrap_err();
        assert!(err.to_string().contains("other conditions"), "{err}");
    }

    #[test]
    fn report_timings_are_masked() {
        let w = Path::new("/tmp/w");
        assert_eq!(
            strip_report("<td>12.5 s</td><td>/tmp/w/x 3 s</td>", w),
            "<td><t> s</td><td><work>/x <t> s</td>"
        );
    }
}
