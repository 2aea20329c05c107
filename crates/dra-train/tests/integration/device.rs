//! candle's stock ops on the test device against this crate's CPU kernels: one DRA training
//! step (train-mode forward at both scales, deviation loss, backward, clipped Adam) of each
//! backbone, compared tensor by tensor in f64.
//!
//! On the CPU (the default, and CI) this checks the custom kernels against candle's stock
//! convolution, BatchNorm and max-pool once more, through the whole model. With
//! `DRA_TEST_DEVICE=cuda` (`cargo xtask gpu-check`) the stock side runs on the GPU, where every
//! layer takes candle's own ops: the GPU path must then agree with the CPU kernels, which are
//! the reference (they match PyTorch, `parity.rs`).

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dra_model::backbones::BackboneKind;
use dra_model::{
    reset_parameters, Dra, DraLoss, HeadScores, Kernels, LossKind, ModelConfig, Prior,
};
use dra_train::engine::{trainable, Adam, AdamConfig};

/// f64 on both sides: what differs is the order of additions, about 1e-15 of a value.
const TOL: f64 = 1e-9;
const LABELS: [u8; 4] = [0, 1, 2, 0];
const N_REF: usize = 2;
const SIZE: usize = 64;

struct Step {
    scores: Vec<Vec<f64>>,
    loss: f64,
    /// Every tensor of the var map after the step, by name: parameters updated by Adam,
    /// BatchNorm running statistics updated by the forward.
    after: Vec<(String, Vec<f64>)>,
    grads: Vec<(String, Vec<f64>)>,
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("a tensor's values")
}

/// One training step of DRA on `backbone` with `kernels` on `device`, from the weights of
/// seed 7 and a fixed input.
fn step(backbone: BackboneKind, kernels: Kernels, device: &Device) -> Result<Step> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, device);
    let config = ModelConfig {
        n_ref: N_REF,
        backbone,
        kernels,
        ..Default::default()
    };
    let dra = Dra::new(config, vb)?;
    reset_parameters(&varmap, 7)?;
    let shape = (N_REF + LABELS.len(), 3, SIZE, SIZE);
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let x: Vec<f64> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f64 / 500.0 - 1.0)
        .collect();
    let x = Tensor::from_vec(x, shape, device)?;
    let scores = HeadScores::average(&dra.forward_scales(&x, true)?)?;
    let priors = [0.1, -0.2, 0.3, 0.0].map(|mean| Prior { mean, std: 1.0 });
    let loss = DraLoss::new(LossKind::Deviation).compute_with_priors(&scores, &LABELS, priors)?;
    let grads = loss.total.backward()?;
    let params = trainable(&varmap);
    let config = AdamConfig {
        weight_decay: 1e-5,
        clip_norm: Some(1.0),
        ..Default::default()
    };
    let mut names: Vec<(String, Tensor)> = varmap
        .data()
        .lock()
        .expect("var map lock")
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let grads_by_name = names
        .iter()
        .filter_map(|(n, t)| grads.get(t).map(|g| (n.clone(), values(g))))
        .collect();
    Adam::new(params, config)?.step(&grads, 2e-4)?;
    Ok(Step {
        scores: [
            &scores.normal,
            &scores.seen,
            &scores.pseudo,
            &scores.residual,
        ]
        .map(values)
        .to_vec(),
        loss: values(&loss.total)[0],
        after: names.iter().map(|(n, t)| (n.clone(), values(t))).collect(),
        grads: grads_by_name,
    })
}

/// Asserts |a − b| ≤ TOL · max |b| + ABS element by element. The absolute part is for values
/// that are zero but for rounding: the gradient of a convolution's bias before train-mode
/// BatchNorm, or of a projection's BatchNorm bias at initialisation (below 1e-6, its sum
/// cancelling), where rounding against rounding is no relative error; Adam's first step then
/// turns such a gradient into a full-size update, so the update differs by as much.
fn close(what: &str, a: &[f64], b: &[f64]) {
    const ABS: f64 = 1e-11;
    assert_eq!(a.len(), b.len(), "{what}: length");
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    let err = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        err <= TOL * scale + ABS,
        "{what}: difference {err:.2e} at scale {scale:.2e}"
    );
}

fn compare(backbone: BackboneKind) -> Result<()> {
    let device = crate::common::device();
    eprintln!(
        "{backbone}: candle's stock ops on {device:?} against the CPU kernels{}",
        if device.is_cpu() {
            " (a GPU is checked with DRA_TEST_DEVICE=cuda: cargo xtask gpu-check)"
        } else {
            ""
        }
    );
    let reference = step(backbone, Kernels::default(), &Device::Cpu)?;
    let stock = step(backbone, Kernels::Stock, &device)?;
    for (i, (a, b)) in stock.scores.iter().zip(&reference.scores).enumerate() {
        close(&format!("{backbone} scores of head {i}"), a, b);
    }
    close(
        &format!("{backbone} loss"),
        &[stock.loss],
        &[reference.loss],
    );
    assert_eq!(stock.grads.len(), reference.grads.len(), "gradients");
    assert!(reference.grads.len() > 20, "the step has gradients");
    for ((name, a), (_, b)) in stock.grads.iter().zip(&reference.grads) {
        close(&format!("{backbone} gradient of {name}"), a, b);
    }
    for ((name, a), (_, b)) in stock.after.iter().zip(&reference.after) {
        close(&format!("{backbone} {name} after the step"), a, b);
    }
    Ok(())
}

#[test]
fn resnet18_step_on_the_test_device_matches_the_cpu_kernels() -> Result<()> {
    compare(BackboneKind::Resnet18)
}

#[test]
fn mobilenet_v2_step_on_the_test_device_matches_the_cpu_kernels() -> Result<()> {
    compare(BackboneKind::MobilenetV2)
}
