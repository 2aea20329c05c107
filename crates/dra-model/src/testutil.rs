//! Helpers shared by this crate's unit tests.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::{reset_parameters, Dra, DraConfig};

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

/// A DRA model with seeded initialisation, f32 on the CPU.
pub fn dra_varmap(seed: u64) -> VarMap {
    let varmap = VarMap::new();
    Dra::new(
        DraConfig::default(),
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
