//! Helpers shared by this crate's unit tests.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::{reset_parameters, Dra, ModelConfig};

/// Deterministic values in [−1, 1) from a multiplicative hash of the index, as f64, shaped.
pub fn ramp(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) % 1000) as f64 / 500.0
                - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Largest absolute element-wise difference.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
    d.to_dtype(DType::F64)
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// The four tensors of a BatchNorm2d under `prefix` (`weight` γ, `bias` β, and running
/// statistics 0 and 1), for building one by `VarBuilder::from_tensors` around given γ and β.
pub fn batchnorm_tensors(
    prefix: &str,
    gamma: &Tensor,
    beta: &Tensor,
) -> std::collections::HashMap<String, Tensor> {
    let c = gamma.elem_count();
    let full = |v: f64| {
        Tensor::full(v, c, gamma.device())
            .and_then(|t| t.to_dtype(gamma.dtype()))
            .unwrap()
    };
    [
        ("weight", gamma.clone()),
        ("bias", beta.clone()),
        ("running_mean", full(0.0)),
        ("running_var", full(1.0)),
    ]
    .into_iter()
    .map(|(name, t)| (format!("{prefix}{name}"), t))
    .collect()
}

/// A DRA model with seeded initialisation, f32 on the CPU.
pub fn dra_varmap(seed: u64) -> VarMap {
    let varmap = VarMap::new();
    Dra::new(
        ModelConfig::default(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    reset_parameters(&varmap, seed).unwrap();
    varmap
}

/// The values of a tensor of `varmap`, flattened.
pub fn values(varmap: &VarMap, name: &str) -> Vec<f32> {
    let t = varmap.data().lock().unwrap()[name].as_tensor().clone();
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Asserts that the gradients candle's backward pass gives `loss` (a scalar, computed in f64)
/// with respect to each of `inputs` (f64) agree with central finite differences. Every
/// `every`-th element of each input is probed, so that a test can keep its shapes odd without
/// running the op thousands of times. `what` names the case in a failure.
///
/// Step 1e-5 in f64: truncation (∝ step²) and rounding (∝ 1e-16 / step) both stay far below
/// the tolerance, 1e-6 relative to the larger of the derivative and 1. Ops with kinks (ReLU,
/// max-pool) need inputs with no value within a step of a kink or a tie.
pub fn assert_gradients_match_finite_differences(
    what: &str,
    inputs: &[Tensor],
    every: usize,
    loss: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) {
    let vars: Vec<candle_core::Var> = inputs
        .iter()
        .map(|t| candle_core::Var::from_tensor(t).unwrap())
        .collect();
    let tracked: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = loss(&tracked).unwrap().backward().unwrap();
    let at = |inputs: &[Tensor]| -> f64 { loss(inputs).unwrap().to_scalar::<f64>().unwrap() };
    for (k, var) in vars.iter().enumerate() {
        let analytic: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: no gradient for input {k}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let values: Vec<f64> = inputs[k].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(analytic.len(), values.len(), "{what}: input {k}");
        for i in (0..values.len()).step_by(every.max(1)) {
            let eps = 1e-5;
            let moved = |d: f64| -> f64 {
                let mut v = values.clone();
                v[i] += d;
                let mut probe = inputs.to_vec();
                probe[k] = Tensor::from_vec(v, inputs[k].dims(), inputs[k].device()).unwrap();
                at(&probe)
            };
            let numeric = (moved(eps) - moved(-eps)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() <= 1e-6 * numeric.abs().max(1.0),
                "{what}: input {k}, element {i}: finite differences {numeric}, backward {}",
                analytic[i]
            );
        }
    }
}
