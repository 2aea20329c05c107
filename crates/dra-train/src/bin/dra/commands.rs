//! `dra train`, `dra eval` and `dra predict`: the library's calls, and what they print.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use dra_data::{Listing, Setting, Unreadable};
use dra_train::engine::References;
use dra_train::record::{predictions_csv, Overrides, REPORT_FILE, THRESHOLD_FILE};
use dra_train::{LoadedModel, Metrics, ReferenceChoice, RunControl, RunRequest, StopSignal};

use crate::args::{CalibrateArgs, EvalArgs, ExportArgs, PredictArgs, TrainArgs};
use crate::progress::Bar;

fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0)
            .context("--device cuda: no usable CUDA device (build with --features cuda)"),
        other => bail!("--device: unknown device `{other}`; valid: cpu, cuda"),
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

/// The lines below the AUCs: pixel metrics, the decision at the threshold, then the notes
/// (a result below chance, a setting that is no detector), one line each.
fn report_details(m: &Metrics, scored_as: &str) {
    if let (Some(pixel), Some(aupro)) = (m.pixel_auroc, m.aupro) {
        println!("localisation: pixel AUROC {pixel:.4}, AUPRO {aupro:.4}");
    }
    match &m.threshold {
        Some(t) => {
            let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
            println!(
                "at threshold {:.4} ({scored_as}): precision {}, recall {}, F1 {}, false-positive rate {} ({} of {} normal test images flagged, {} of {} anomalies missed)",
                t.threshold,
                show(t.precision),
                show(t.recall),
                show(t.f1),
                show(t.fpr),
                t.counts.fp,
                t.counts.fp + t.counts.tn,
                t.counts.fn_,
                t.counts.fn_ + t.counts.tp,
            );
        }
        None => println!(
            "no decision threshold: train with --calibration-fraction F, or run `dra calibrate --model RUN --normals DIR`"
        ),
    }
    for note in &m.notes {
        eprintln!("warning: {note}");
    }
}

pub(crate) fn train(args: TrainArgs) -> Result<()> {
    let device = device(&args.device)?;
    let mut request = match &args.resume {
        Some(run) => {
            if args.overrides != Overrides::default() {
                bail!("--resume: the run goes on with the settings it started with; give no others (--help lists them)");
            }
            RunRequest::resume(run, device)?
        }
        None => {
            let (name, category_dir) = args.data.resolve()?;
            RunRequest {
                config: args.config()?,
                dataset: args.data.dataset().to_string(),
                category_dir,
                family: name.family(),
                out_dir: args
                    .out
                    .clone()
                    .expect("clap requires --out without --resume"),
                device,
                on_unreadable: args.data.unreadable.policy(),
                save_maps: args.save_maps.clone(),
                control: RunControl {
                    overwrite: args.overwrite,
                    ..Default::default()
                },
            }
        }
    };
    request.control.checkpoint_every = args.checkpoint_every.map(|n| n as usize);
    request.control.cache_bytes = args
        .cache_mb
        .map(|mb| (mb as usize).saturating_mul(1 << 20));
    request.control.stop =
        Some(StopSignal::on_termination().context("setting up the stop on SIGINT/SIGTERM")?);
    let (dataset, out) = (request.dataset.clone(), request.out_dir.clone());
    let mut bar = Bar::new(!args.quiet, &dataset);
    let m = dra_train::train_with_progress(&request, &mut |p| bar.show(p))?;
    report_unreadable(&m.unreadable);
    println!(
        "{} on {}: AUC-ROC {:.4}, AUC-PR {:.4} ({} normal + {} anomalous test images; trained on {} normal + {} labelled anomalies in {:.0} s)",
        request.config.method,
        dataset,
        m.auc_roc,
        m.auc_pr,
        m.n_test_normal,
        m.n_test_anomaly,
        m.n_train_normal,
        m.n_train_anomaly,
        m.train_seconds
    );
    report_details(
        &m,
        "test set scored with the stored references, as `dra predict` decides",
    );
    if m.ignored > 0 {
        eprintln!(
            "note: {} file(s) or tile(s) of the data folder left out; reasons in {}, files listed by `dra data inspect`",
            m.ignored,
            out.join("config.json").display()
        );
    }
    println!(
        "results in {} (open {} in a browser)",
        out.display(),
        out.join(REPORT_FILE).display()
    );
    Ok(())
}

pub(crate) fn eval(args: EvalArgs) -> Result<()> {
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
    let mut loaded = LoadedModel::load(&args.model, &fallback, &device)?;
    args.decision.apply(&mut loaded);
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
        args.save_maps.as_deref(),
        args.overwrite,
        &device,
    )?;
    report_unreadable(&m.unreadable);
    println!(
        "{}: AUC-ROC {:.4}, AUC-PR {:.4} ({} normal + {} anomalous test images); results in {}",
        args.data.dataset(),
        m.auc_roc,
        m.auc_pr,
        m.n_test_normal,
        m.n_test_anomaly,
        args.out.display()
    );
    let scored_as = if matches!(references, ReferenceChoice::Random { .. }) {
        "random references; --fixed-references decides as `dra predict` does"
    } else {
        "fixed references"
    };
    report_details(&m, scored_as);
    if m.ignored > 0 {
        eprintln!(
            "note: {} file(s) or tile(s) of the data folder left out; `dra data inspect` lists them with the reasons",
            m.ignored
        );
    }
    Ok(())
}

pub(crate) fn predict(args: PredictArgs) -> Result<()> {
    let device = device(&args.device)?;
    let mut loaded = LoadedModel::load(&args.model, &args.bare.fallback(), &device)?;
    args.decision.apply(&mut loaded);
    let mut references = if args.reference_images.is_empty() {
        loaded.stored_references()?
    } else {
        References::from_paths(&args.reference_images, loaded.config.image_size)?
    };
    let listing = Listing::of_inputs(&args.images)?.require(args.unreadable.policy())?;
    report_unreadable(&listing.unreadable);
    for left in &listing.ignored {
        eprintln!("left out: {}: {}", left.image.path.display(), left.reason);
    }
    let images = listing.paths();
    let rows = dra_train::predict(
        &loaded,
        &images,
        &mut references,
        dra_train::PredictOutputs {
            heatmaps: args.out.as_deref(),
            maps: args.save_maps.as_deref(),
            overwrite: args.overwrite,
        },
        &device,
    )?;
    print!("{}", predictions_csv(&rows, loaded.threshold.as_ref()));
    match &loaded.threshold {
        Some(t) => {
            let flagged = rows.iter().filter(|r| t.is_anomalous(r.score)).count();
            eprintln!(
                "{flagged} of {} image(s) above the threshold {:.4} ({})",
                rows.len(),
                t.value,
                t.source
            );
        }
        None => eprintln!(
            "no decision: the model has no threshold (dra calibrate --model RUN --normals DIR, or --threshold)"
        ),
    }
    if let Some(out) = &args.out {
        eprintln!("heat maps in {}", out.display());
    }
    if let Some(maps) = &args.save_maps {
        eprintln!("anomaly maps (.npy) in {}", maps.display());
    }
    Ok(())
}

pub(crate) fn export(args: ExportArgs) -> Result<()> {
    let exported = dra_train::export(&args.model, &args.out, args.overwrite)?;
    let meta = |key: &str| {
        exported
            .metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    println!(
        "wrote {} ({:.1} MB): input {}; outputs {}",
        exported.path.display(),
        exported.bytes as f64 / 1e6,
        meta("input").unwrap_or_default(),
        exported.outputs.join(", ")
    );
    match meta("threshold") {
        Some(t) => println!(
            "threshold {t} ({}): anomalous when score > threshold",
            meta("threshold_source").unwrap_or_default()
        ),
        None => eprintln!(
            "note: the run has no threshold, so neither has the model (dra calibrate --model RUN --normals DIR, then export again)"
        ),
    }
    Ok(())
}

pub(crate) fn calibrate(args: CalibrateArgs) -> Result<()> {
    let device = device(&args.device)?;
    let loaded = LoadedModel::load(&args.model, &dra_train::TrainConfig::paper(), &device)?;
    let (threshold, listing) = dra_train::calibrate(
        &loaded,
        &args.normals,
        args.target_fpr,
        args.unreadable.policy(),
        &device,
    )?;
    report_unreadable(&listing.unreadable);
    for left in &listing.ignored {
        eprintln!("left out: {}: {}", left.image.path.display(), left.reason);
    }
    println!(
        "threshold {:.6} at a false-positive rate of {} on {}; written to {}",
        threshold.value,
        args.target_fpr,
        threshold.source,
        args.model.join(THRESHOLD_FILE).display()
    );
    if let Some(previous) = &loaded.threshold {
        eprintln!(
            "note: it replaces the threshold {:.6} set on {}",
            previous.value, previous.source
        );
    }
    if let Some(caution) = threshold.caution() {
        eprintln!("warning: {caution}");
    }
    Ok(())
}
