//! `dra train`, `dra eval` and `dra predict`: the library's calls, and what they print.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use dra_data::{Listing, Setting, Unreadable};
use dra_train::{LoadedModel, ReferenceChoice, References, RunRequest};

use crate::args::{EvalArgs, PredictArgs, TrainArgs};

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

pub(crate) fn train(args: TrainArgs) -> Result<()> {
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
    let loaded = LoadedModel::load(&args.model, &args.bare.fallback(), &device)?;
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
        args.out.as_deref(),
        &device,
    )?;
    print!("{}", dra_train::predictions_csv(&rows));
    if let Some(out) = &args.out {
        eprintln!("heat maps in {}", out.display());
    }
    Ok(())
}
