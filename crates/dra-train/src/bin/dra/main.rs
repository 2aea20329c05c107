//! `dra`: train DRA on a data set in the MVTec AD layout, and manage the embedded data.

// The doc comments of `args` are clap's `--help` text, printed as written: `<category>` there
// is a placeholder for the user, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

mod args;
mod commands;
mod inspect;
mod progress;

use std::process::ExitCode;

use clap::Parser;
use dra_data::synthetic;
use dra_train::TrainError;

use crate::args::{Cli, Command, DataCommand};

fn main() -> ExitCode {
    // First, while this is the only thread; untuned, training is only slower.
    if let Err(e) = dra_model::configure_cpu_runtime() {
        eprintln!("warning: {e}");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => commands::train(*args),
        Command::Eval(args) => commands::eval(args),
        Command::Predict(args) => commands::predict(args),
        Command::Calibrate(args) => commands::calibrate(args),
        Command::Export(args) => commands::export(args),
        Command::Data(DataCommand::Inspect(args)) => inspect::inspect(args),
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
        Err(e) => match e.downcast_ref::<TrainError>() {
            // Asked to stop (SIGINT, SIGTERM): not a failure of the run, which goes on later.
            Some(TrainError::Stopped { dir, .. }) => {
                eprintln!("{e}");
                eprintln!("to go on: dra train --resume {}", dir.display());
                ExitCode::from(130)
            }
            _ => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
