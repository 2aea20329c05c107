//! Seeded initialisation by tensor name, so that the same seed builds the same model bit for
//! bit (candle's own random initialisers cannot be seeded on the CPU).

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Re-initialises every tensor of `varmap` as PyTorch would for DRA built from scratch:
/// - backbone convolutions (`feature_extractor.*`): torchvision's Kaiming normal, fan-out, ReLU
///   gain, i.e. N(0, 2 / (c_out·k·k));
/// - head convolutions and linear layers: PyTorch's default, weight and bias uniform in
///   ±1/√fan_in;
/// - BatchNorm: weight 1, bias 0, running mean 0, running variance 1.
///
/// Tensors are visited in name order with one generator, so the result depends only on `seed`.
pub fn reset_parameters(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n = var.elem_count();
        let (stem, leaf) = name.rsplit_once('.').unwrap_or(("", name));
        let weight_dims = data
            .get(&format!("{stem}.weight"))
            .map(|w| w.dims().to_vec());
        let values: Vec<f32> = match leaf {
            "running_mean" => vec![0.0; n],
            "running_var" => vec![1.0; n],
            "weight" if dims.len() == 1 => vec![1.0; n],
            "bias" if weight_dims.as_ref().is_none_or(|d| d.len() == 1) => vec![0.0; n],
            "weight" if name.starts_with("feature_extractor.") => {
                let fan_out = dims[0] * dims[2..].iter().product::<usize>();
                let std = (2.0 / fan_out as f64).sqrt();
                (0..n)
                    .map(|_| (rng.sample::<f64, _>(StandardNormal) * std) as f32)
                    .collect()
            }
            "weight" | "bias" => {
                let w = weight_dims.as_deref().unwrap_or(&dims);
                let fan_in: usize = w[1..].iter().product();
                let bound = 1.0 / (fan_in as f64).sqrt();
                (0..n)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect()
            }
            _ => continue,
        };
        // Drawn in f32 whatever the model's dtype, so that an f64 model starts from the same
        // values as the f32 one.
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testutil::{dra_varmap as build, values as get};

    #[test]
    fn seeded_and_shaped_like_pytorch() {
        let (a, b, c) = (build(1), build(1), build(2));
        let name = "feature_extractor.net.layer1.0.conv1.weight";
        assert_eq!(get(&a, name), get(&b, name));
        assert_ne!(get(&a, name), get(&c, name));
        let w = get(&a, name);
        let std = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
        let want = (2.0f32 / (64.0 * 9.0)).sqrt();
        assert!((std - want).abs() / want < 0.05, "{std} vs {want}");
        let fc = get(&a, "holistic_head.fc1.bias");
        assert!(fc.iter().all(|x| x.abs() <= 1.0 / 512f32.sqrt()));
        assert!(get(&a, "composite_head.conv.1.weight")
            .iter()
            .all(|x| *x == 1.0));
        assert!(get(&a, "composite_head.conv.1.bias")
            .iter()
            .all(|x| *x == 0.0));
        assert!(get(&a, "feature_extractor.net.bn1.running_var")
            .iter()
            .all(|x| *x == 1.0));
    }
}
