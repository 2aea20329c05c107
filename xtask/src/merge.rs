//! `cargo xtask merge DIR... --out DIR`: unites the results folders of a sweep's shards (or of
//! any runs of one sweep) and renders the tables as the unsharded sweep would.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::runs::{self, RunRow};
use crate::spec::{read_spec, write_spec};

#[derive(Args)]
pub struct MergeArgs {
    /// Results folders of the shards (each with sweep.json and runs.csv).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Folder for the united runs.csv, sweep.json and tables.
    #[arg(long)]
    out: PathBuf,
}

pub fn merge(args: &MergeArgs) -> Result<()> {
    let first = read_spec(&args.dirs[0])?;
    let mut spec = first.clone();
    let mut rows: BTreeMap<String, RunRow> = BTreeMap::new();
    for dir in &args.dirs {
        let other = read_spec(dir)?;
        if !first.same_grid(&other) {
            bail!(
                "{}: its sweep.json describes another grid than {} (sweep, data sets, shots, runs, losses and methods must agree)",
                dir.display(),
                args.dirs[0].display()
            );
        }
        // A data set present on any machine is present in the united table.
        for (e, o) in spec.entries.iter_mut().zip(&other.entries) {
            if e.dir.is_none() {
                e.dir = o.dir.clone();
            }
        }
        for row in runs::read(&dir.join("runs.csv"))? {
            let key = row.key();
            match rows.get(&key) {
                Some(seen) if seen.config_hash != row.config_hash => bail!(
                    "{}: run {key} has configuration {} here but {} in another folder; the shards were run with different settings",
                    dir.display(),
                    row.config_hash,
                    seen.config_hash
                ),
                Some(_) => {}
                None => {
                    rows.insert(key, row);
                }
            }
        }
    }
    std::fs::create_dir_all(&args.out)?;
    write_spec(&args.out, &spec)?;
    let rows: Vec<RunRow> = rows.into_values().collect();
    runs::write_all(&args.out, &rows)?;
    println!(
        "merged {} run(s) from {} folder(s) into {}",
        rows.len(),
        args.dirs.len(),
        args.out.display()
    );
    crate::render::render_dir(&args.out)
}
