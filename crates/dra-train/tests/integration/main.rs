//! dra-train's integration tests, in one binary so that candle is linked once: whole runs on
//! generated data (`train_tiny`, `methods`, `ahl`, `decisions_and_maps`, `threads`, `memory`), the run records
//! (`records`), the model against PyTorch's fixtures and the test device (`parity`, `device`),
//! and the `dra` program as a user runs it (`cli`, `inputs`, `outputs`, `resume`, `export`).

mod ahl;
mod cli;
mod common;
mod decisions_and_maps;
mod device;
mod export;
mod inputs;
mod memory;
mod methods;
mod outputs;
mod parity;
mod records;
mod resume;
mod threads;
mod train_tiny;
