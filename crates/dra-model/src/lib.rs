//! The DRA network (Ding, Pang & Shen, CVPR 2022) in candle.
//!
//! [`Dra`] is a ResNet-18 feature extractor with train-mode BatchNorm and four heads: seen
//! abnormality, pseudo abnormality, latent residual abnormality and normality, each run on a
//! two-level image pyramid. Parameter names follow the official model's `state_dict`, so
//! weights move between the two implementations by name.
//!
//! The competing methods of the paper's tables (DevNet, Deep SAD, MINNS, FLOS, SAOE) live in
//! [`baselines`] on the same backbone; [`Detector`] puts every [`Method`] behind one interface.
//!
//! # Use
//!
//! Build a [`Detector`] from a [`Method`] and a [`ModelConfig`] (backbone, top-K rate, pyramid,
//! reference images, and the [`Kernels`] its layers run); initialise it with
//! [`reset_parameters`] or load trained tensors with [`load_into`]; train it on
//! [`Detector::loss`]; score images with [`Detector::scores`]. A model's tensors are saved by
//! name with candle's `VarMap::save` (safetensors). An [`ImageBatch`] holds DRA's `n_ref`
//! reference images and the queries; each query of a training batch has a [`Target`].
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Optimizer, VarBuilder, VarMap, SGD};
//! use dra_model::{load_into, reset_parameters, weights, Detector, ModelConfig, ImageBatch};
//! use dra_model::{LossKind, Method, Scope, Target};
//! use rand::SeedableRng;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // DRA on ResNet-18 with two reference images per batch, seeded weights.
//! let config = ModelConfig { n_ref: 2, ..Default::default() };
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = Detector::new(Method::Dra, &config, vb)?;
//! reset_parameters(&varmap, 0)?;
//!
//! // One training step on the two references and four labelled queries: tiny 32-px noise.
//! let images = Tensor::randn(0f32, 1., (6, 3, 32, 32), &Device::Cpu)?;
//! let batch = ImageBatch::with_references(images, 2)?;
//! let targets = [Target::Normal, Target::Normal, Target::Anomaly, Target::PseudoAnomaly];
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let loss = model.loss(&batch, &targets, LossKind::Deviation, &mut rng)?;
//! let parameters = varmap.data().lock().unwrap().iter()
//!     .filter(|(name, _)| !weights::is_buffer(name))
//!     .map(|(_, var)| var.clone())
//!     .collect();
//! SGD::new(parameters, 1e-3)?.backward_step(&loss)?;
//!
//! // One anomaly score per query (higher: more anomalous).
//! let scores = model.scores(&batch)?.score;
//! assert_eq!(scores.dims(), [4]);
//!
//! // Saved and loaded by name, the model scores alike.
//! let path = std::env::temp_dir().join(format!("dra-doc-{}.safetensors", std::process::id()));
//! varmap.save(&path)?;
//! let loaded = VarMap::new();
//! let vb = VarBuilder::from_varmap(&loaded, DType::F32, &Device::Cpu);
//! let again = Detector::new(Method::Dra, &config, vb)?;
//! load_into(&loaded, &path, Scope::Full)?;
//! std::fs::remove_file(&path)?;
//! assert_eq!(again.scores(&batch)?.score.to_vec1::<f32>()?, scores.to_vec1::<f32>()?);
//! # Ok(())
//! # }
//! ```
//!
//! # Modules
//!
//! - [`dra`]: the DRA model, its heads (also used by the baselines) and its loss;
//! - [`baselines`]: the competing methods;
//! - [`backbones`]: ResNet-18 and MobileNetV2 with torchvision's tensor names;
//! - [`ops`]: the CPU kernels (convolution, BatchNorm, max-pool, ResNet's stem) and the layers
//!   that run them;
//! - [`weights`]: reading `.pth` and safetensors files, loading by name, which tensors are
//!   state rather than parameters.
//!
//! The binaries call [`configure_cpu_runtime`] first thing in `main`.

pub mod backbones;
pub mod baselines;
mod detector;
pub mod dra;
mod head_set;
mod image_batch;
mod init;
mod method;
mod model_config;
pub mod onnx;
pub mod ops;
mod runtime;
#[cfg(test)]
mod testutil;
pub mod weights;

pub use backbones::BackboneKind;
pub use detector::{Detector, DetectorScores, ExportedDetector, LossTerms};
pub use dra::{Dra, DraHeads, DraLoss, HeadScores, LossKind, LossParts, Prior};
pub use head_set::{HeadSet, HEAD_NAMES};
pub use image_batch::{ImageBatch, Target};
pub use init::reset_parameters;
pub use method::Method;
pub use model_config::ModelConfig;
pub use ops::{Kernels, Winograd};
pub use runtime::{configure_cpu_runtime, RuntimeError};
pub use weights::{load_into, read_tensors, Scope, WeightsError};
