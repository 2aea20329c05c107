//! `dra data inspect`: the images per split and class, and everything left out, as a table,
//! CSV or JSON. The inventory itself is `dra_data::inventory`'s; this module only prints it.

use anyhow::{bail, Result};
use dra_data::datasets::{DatasetName, MVTEC_FOLDER};
use dra_data::inventory::{group, Inventory};

use crate::args::{Format, InspectArgs};

pub(crate) fn inspect(args: InspectArgs) -> Result<()> {
    let data = &args.data;
    let policy = data.unreadable.policy();
    // `mvtec` alone: every category folder of the MVTec root.
    let inventory = if data.dataset() == "mvtec" {
        let root = match (&data.dataset_dir, &data.data_root) {
            (Some(d), _) => d.clone(),
            (None, Some(r)) => r.join(MVTEC_FOLDER),
            (None, None) => bail!("--data-root: give --data-root DIR or --dataset-dir DIR"),
        };
        Inventory::of_mvtec_root(&root, policy)?
    } else {
        let (name, dir) = data.resolve()?;
        let subset = match &name {
            DatasetName::Mvtec(c) | DatasetName::Synthetic(c) => c.clone(),
            DatasetName::Family(f) => f.name().to_string(),
        };
        Inventory::of_category(subset, name.family().load(&dir, policy)?)
    };
    let counts = inventory.counts(data.dataset());
    // Nothing is skipped in silence: what the loaders left out, and why; with
    // --skip-unreadable, the files that do not decode, with the decoder's reason.
    let left = inventory.ignored();
    let unreadable = inventory.unreadable();
    let groups = group(&left);
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
            for g in &groups {
                eprintln!(
                    "ignored: {}: {} × {} (first: {})",
                    g.subset, g.count, g.reason, g.first
                );
            }
            for u in &unreadable {
                eprintln!("unreadable: {}: {}: {}", u.subset, u.path, u.reason);
            }
        }
        Format::Table => {
            println!("| subset | train normal | test normal | test anomaly | anomaly classes |\n|---|---|---|---|---|");
            for (subset, cat) in &inventory.subsets {
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
                for g in &groups {
                    println!(
                        "| {} | {} | {} | {} |",
                        g.subset, g.count, g.reason, g.first
                    );
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
