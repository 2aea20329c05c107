//! ψ, AHL's sequence model: a two-layer bidirectional LSTM that reads each query sample's
//! scores under the T adapted heads over the last K epochs and predicts the next epoch's. Its
//! prediction, set against the labels, says how well each episode's heads generalise, which
//! weighs the episodes in the outer update (the paper's Eqs. 5–7).

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};
use candle_nn::rnn::{Direction, LSTMConfig, LSTM, RNN};
use candle_nn::{linear, Linear, Module, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The BiLSTM of the AHL code (`aux_net.py`): input and hidden width T (one per episode), two
/// layers, then ReLU and a linear layer from both directions' last outputs to T. Tensor names
/// are PyTorch's (`lstm.weight_ih_l0`, `lstm.weight_ih_l0_reverse`, …, `fc.weight`).
#[derive(Debug, Clone)]
pub struct Psi {
    /// (forward, backward) LSTM of each layer.
    layers: Vec<(LSTM, LSTM)>,
    fc: Linear,
}

impl Psi {
    /// Layers of the BiLSTM (the code's `num_layers`).
    pub const LAYERS: usize = 2;

    /// A seeded ψ for `t` episodes in its own var map, initialised as PyTorch does: every
    /// LSTM tensor uniform in ±1/√hidden, the linear layer in ±1/√fan_in.
    pub fn new(t: usize, seed: u64, device: &Device) -> Result<(Self, VarMap)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let lstm_vb = vb.pp("lstm");
        let mut layers = Vec::with_capacity(Self::LAYERS);
        for layer in 0..Self::LAYERS {
            let input = if layer == 0 { t } else { 2 * t };
            let make = |direction| {
                let config = LSTMConfig {
                    layer_idx: layer,
                    direction,
                    ..Default::default()
                };
                LSTM::new(input, t, config, lstm_vb.clone())
            };
            layers.push((make(Direction::Forward)?, make(Direction::Backward)?));
        }
        let fc = linear(2 * t, t, vb.pp("fc"))?;
        {
            let data = varmap
                .data()
                .lock()
                .expect("the var map lock is not poisoned");
            let mut names: Vec<&String> = data.keys().collect();
            names.sort();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for name in names {
                let var = &data[name];
                let fan_in = if name.starts_with("fc.") { 2 * t } else { t };
                let bound = 1.0 / (fan_in as f64).sqrt();
                let values: Vec<f32> = (0..var.elem_count())
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect();
                var.set(&Tensor::from_vec(values, var.dims(), device)?)?;
            }
        }
        Ok((Self { layers, fc }, varmap))
    }

    /// The predicted next scores `(N, T)` of windows `(N, K, T)` of past scores, oldest first.
    /// Initial states are zero (the code draws them uniformly at random on every call).
    pub fn forward(&self, windows: &Tensor) -> Result<Tensor> {
        let k = windows.dim(1)?;
        let mut x = windows.contiguous()?;
        for (forward, backward) in &self.layers {
            let ahead = forward.states_to_tensor(&forward.seq(&x)?)?;
            let behind =
                reverse_time(&backward.states_to_tensor(&backward.seq(&reverse_time(&x)?)?)?)?;
            x = Tensor::cat(&[ahead, behind], D::Minus1)?.contiguous()?;
        }
        self.fc.forward(&x.i((.., k - 1, ..))?.relu()?)
    }
}

/// `(N, K, F)` with the K axis reversed.
fn reverse_time(x: &Tensor) -> Result<Tensor> {
    let k = x.dim(1)?;
    let order: Vec<u32> = (0..k as u32).rev().collect();
    x.index_select(&Tensor::new(order.as_slice(), x.device())?, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's tensor names and shapes, the same seed gives the same ψ, and the time axis
    /// matters (reversing a window changes the prediction).
    #[test]
    fn shapes_names_and_determinism() -> Result<()> {
        let dev = Device::Cpu;
        let (psi, varmap) = Psi::new(6, 1, &dev)?;
        {
            let data = varmap.data().lock().unwrap();
            for name in [
                "lstm.weight_ih_l0",
                "lstm.weight_hh_l0_reverse",
                "lstm.bias_ih_l1",
                "lstm.bias_hh_l1_reverse",
                "fc.weight",
            ] {
                assert!(data.contains_key(name), "{name}");
            }
            assert_eq!(data["lstm.weight_ih_l1"].dims(), [24, 12]);
        }
        let x = Tensor::randn(0f32, 1., (4, 5, 6), &dev)?;
        let y = psi.forward(&x)?;
        assert_eq!(y.dims(), [4, 6]);
        let (again, _) = Psi::new(6, 1, &dev)?;
        assert_eq!(again.forward(&x)?.to_vec2::<f32>()?, y.to_vec2::<f32>()?);
        let flipped = reverse_time(&x)?;
        assert_ne!(
            psi.forward(&flipped)?.to_vec2::<f32>()?,
            y.to_vec2::<f32>()?
        );
        Ok(())
    }

    /// ψ learns to predict a window's next value: a few Adam steps on a fixed target lower
    /// the error (gradients reach every tensor through both directions).
    #[test]
    fn trains_towards_its_targets() -> Result<()> {
        let dev = Device::Cpu;
        let (psi, varmap) = Psi::new(3, 2, &dev)?;
        // Seeded: candle's own random tensors are not, and the test must not depend on luck.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let values: Vec<f32> = (0..8 * 4 * 3)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let x = Tensor::from_vec(values, (8, 4, 3), &dev)?;
        let target = x.i((.., 3, ..))?.contiguous()?;
        let mut adam = crate::engine::optim::Adam::new(
            crate::engine::optim::trainable(&varmap),
            crate::engine::optim::AdamConfig::default(),
        )?;
        let mse = |p: &Psi| -> Result<Tensor> { (p.forward(&x)? - &target)?.sqr()?.mean_all() };
        let before = mse(&psi)?.to_scalar::<f32>()?;
        for _ in 0..150 {
            let grads = mse(&psi)?.backward()?;
            for var in crate::engine::optim::trainable(&varmap) {
                assert!(grads.get(var.as_tensor()).is_some());
            }
            adam.step(&grads, 0.01)?;
        }
        let after = mse(&psi)?.to_scalar::<f32>()?;
        assert!(after < 0.7 * before, "{before} → {after}");
        Ok(())
    }
}
