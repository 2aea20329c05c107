//! The four DRA heads (`modeling/net.py` of the official code), one struct each.

use candle_core::{Module, ModuleT, Result, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::onnx::{Attr, Graph};
use crate::ops::{BatchNorm2d, Conv2d, Kernels, Linear};

/// Mean of the `K = max(⌊rate·h·w⌋, 1)` largest values of each row of `(B, N)` scores.
/// Gradients reach exactly the selected cells (sort → gather).
pub fn top_k_mean(scores: &Tensor, rate: f64) -> Result<Tensor> {
    let n = scores.dim(1)?;
    // The official code computes int(n * rate) in double precision; keep that rounding.
    let k = ((n as f64 * rate) as usize).max(1);
    let order = scores
        .arg_sort_last_dim(false)?
        .narrow(1, 0, k)?
        .contiguous()?;
    scores.contiguous()?.gather(&order, 1)?.mean(1)
}

/// [`top_k_mean`] as ONNX nodes on cell scores `(B, n)` with `n` known: `TopK` of the
/// `max(⌊rate·n⌋, 1)` largest, then their mean, `(B,)`.
pub(crate) fn export_top_k_mean(
    g: &mut Graph,
    name: &str,
    cells: &str,
    n: usize,
    rate: f64,
) -> String {
    let k = ((n as f64 * rate) as usize).max(1);
    let k = g.constant_i64(&format!("{name}.k"), &[k as i64]);
    // TopK's values; its indices, the second output, are not used.
    let top = g
        .node_outputs(
            "TopK",
            &format!("{name}.topk"),
            &[cells, &k],
            &[
                Attr::Int("axis", -1),
                Attr::Int("largest", 1),
                Attr::Int("sorted", 1),
            ],
            2,
        )
        .remove(0);
    g.node(
        "ReduceMean",
        &format!("{name}.mean"),
        &[&top],
        &[Attr::Ints("axes", &[1]), Attr::Int("keepdims", 0)],
    )
}

/// Seen- and pseudo-abnormality heads: a 1×1 convolution scores every cell of the feature map;
/// the image's score is the top-K mean of the absolute cell scores.
#[derive(Debug, Clone)]
pub struct PlainHead {
    scoring: Conv2d,
    topk_rate: f64,
}

impl PlainHead {
    /// A head on `in_channels`-channel feature maps that averages the top `topk_rate` fraction of
    /// cells, run by `kernels`; the convolution's tensors are `scoring.*` under `vb`.
    pub fn new(
        in_channels: usize,
        topk_rate: f64,
        kernels: Kernels,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::with_conv(in_channels, topk_rate, kernels, vb.pp("scoring"))
    }

    /// [`PlainHead::new`] with the convolution's tensors (`weight`, `bias`) directly under
    /// `conv_vb`: for a method whose code names that layer otherwise (DevNet's `conv`).
    pub(crate) fn with_conv(
        in_channels: usize,
        topk_rate: f64,
        kernels: Kernels,
        conv_vb: VarBuilder,
    ) -> Result<Self> {
        let config = Conv2dConfig::default();
        let scoring = Conv2d::new(in_channels, 1, 1, config, true, kernels, conv_vb)?;
        Ok(Self { scoring, topk_rate })
    }

    /// Per-cell absolute scores, `(B, h·w)`: the map behind the head's score (and heat maps).
    pub fn cell_scores(&self, features: &Tensor) -> Result<Tensor> {
        self.scoring.forward(features)?.flatten_from(1)?.abs()
    }

    /// One score per image, `(B,)`.
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        self.score_cells(&self.cell_scores(features)?)
    }

    /// The image scores `(B,)` of cell scores `(B, h·w)` from [`PlainHead::cell_scores`]: the
    /// top-K mean. Split from `forward` so that a map and a score can share one pass.
    pub fn score_cells(&self, cells: &Tensor) -> Result<Tensor> {
        top_k_mean(cells, self.topk_rate)
    }

    /// The head as ONNX nodes on feature maps of `cells` = h·w cells: returns the names of
    /// the cell scores `(B, h·w)` and of the score `(B,)`.
    pub fn export(
        &self,
        g: &mut Graph,
        name: &str,
        features: &str,
        cells: usize,
    ) -> Result<(String, String)> {
        let y = self
            .scoring
            .export(g, &format!("{name}.scoring"), features)?;
        let flat = g.node(
            "Flatten",
            &format!("{name}.flatten"),
            &[&y],
            &[Attr::Int("axis", 1)],
        );
        let abs = g.node("Abs", &format!("{name}.abs"), &[&flat], &[]);
        let score = export_top_k_mean(g, name, &abs, cells, self.topk_rate);
        Ok((abs, score))
    }
}

/// Latent-residual head: the mean reference feature map minus the query's, through a 3×3
/// convolution, BatchNorm2d and ReLU, then scored as a [`PlainHead`].
#[derive(Debug, Clone)]
pub struct CompositeHead {
    conv: Conv2d,
    bn: BatchNorm2d,
    plain: PlainHead,
}

impl CompositeHead {
    /// A head on `in_channels`-channel feature maps, run by `kernels`; tensors `conv.0.*` (the
    /// 3×3 convolution), `conv.1.*` (the BatchNorm) and `scoring.*` under `vb`, as in the
    /// official `nn.Sequential`.
    pub fn new(
        in_channels: usize,
        topk_rate: f64,
        kernels: Kernels,
        vb: VarBuilder,
    ) -> Result<Self> {
        let config = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv2d::new(
                in_channels,
                in_channels,
                3,
                config,
                true,
                kernels,
                vb.pp("conv").pp("0"),
            )?,
            bn: BatchNorm2d::new(in_channels, kernels, vb.pp("conv").pp("1"))?,
            plain: PlainHead::new(in_channels, topk_rate, kernels, vb)?,
        })
    }

    fn residual_map(&self, features: &Tensor, references: &Tensor, train: bool) -> Result<Tensor> {
        let mean_ref = references.mean_keepdim(0)?;
        let residual = mean_ref.broadcast_sub(features)?;
        let x = self.conv.forward(&residual)?;
        self.bn.forward_relu_t(&x, train)
    }

    /// Per-cell absolute scores `(B, h·w)`.
    pub fn cell_scores(
        &self,
        features: &Tensor,
        references: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        self.plain
            .cell_scores(&self.residual_map(features, references, train)?)
    }

    /// One score per image, `(B,)`. `references` are the reference images' feature maps.
    pub fn forward_t(&self, features: &Tensor, references: &Tensor, train: bool) -> Result<Tensor> {
        self.score_cells(&self.cell_scores(features, references, train)?)
    }

    /// The image scores `(B,)` of cell scores from [`CompositeHead::cell_scores`].
    pub fn score_cells(&self, cells: &Tensor) -> Result<Tensor> {
        self.plain.score_cells(cells)
    }

    /// The head in eval mode as ONNX nodes on feature maps of h·w = `cells` cells, against
    /// the constant `mean_reference` (the references' mean feature map, `(1, C, h, w)`):
    /// returns the names of the cell scores and of the score.
    pub fn export(
        &self,
        g: &mut Graph,
        name: &str,
        features: &str,
        mean_reference: &str,
        cells: usize,
    ) -> Result<(String, String)> {
        let residual = g.node(
            "Sub",
            &format!("{name}.residual"),
            &[mean_reference, features],
            &[],
        );
        let x = self.conv.export(g, &format!("{name}.conv.0"), &residual)?;
        let x = self.bn.export(g, &format!("{name}.conv.1"), &x, true)?;
        self.plain.export(g, name, &x, cells)
    }
}

/// Global average pooling of an NCHW feature map, `(B, C)`: the normality head's first layer,
/// and the baselines' pooled features.
pub(crate) fn global_pool(features: &Tensor) -> Result<Tensor> {
    features.mean(D::Minus1)?.mean(D::Minus1)
}

/// [`global_pool`] as an ONNX `ReduceMean` over the feature map's cells, `(B, C)`.
pub(crate) fn export_global_pool(g: &mut Graph, name: &str, features: &str) -> String {
    g.node(
        "ReduceMean",
        name,
        &[features],
        &[Attr::Ints("axes", &[2, 3]), Attr::Int("keepdims", 0)],
    )
}

/// Normality head: global average pooling, 512 → 256 → ReLU → 1, absolute value. Trained
/// towards 1 on normal images and subtracted from the anomaly score.
#[derive(Debug, Clone)]
pub struct HolisticHead {
    fc1: Linear,
    fc2: Linear,
}

impl HolisticHead {
    /// A head on `in_channels`-channel feature maps; tensors `fc1.*` and `fc2.*` under `vb`.
    pub fn new(in_channels: usize, kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(in_channels, 256, true, kernels, vb.pp("fc1"))?,
            fc2: Linear::new(256, 1, true, kernels, vb.pp("fc2"))?,
        })
    }

    /// The head as ONNX nodes on feature maps: returns the name of the score `(B,)`.
    pub fn export(&self, g: &mut Graph, name: &str, features: &str) -> Result<String> {
        let pooled = export_global_pool(g, &format!("{name}.pool"), features);
        let hidden = self.fc1.export(g, &format!("{name}.fc1"), &pooled)?;
        let hidden = g.node("Relu", &format!("{name}.relu"), &[&hidden], &[]);
        let out = self.fc2.export(g, &format!("{name}.fc2"), &hidden)?;
        let abs = g.node("Abs", &format!("{name}.abs"), &[&out], &[]);
        let flat = g.constant_i64(&format!("{name}.shape"), &[-1]);
        Ok(g.node("Reshape", &format!("{name}.score"), &[&abs, &flat], &[]))
    }

    /// One score per image, `(B,)`.
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let pooled = global_pool(features)?;
        let hidden = self.fc1.forward(&pooled)?.relu()?;
        self.fc2.forward(&hidden)?.abs()?.squeeze(1)
    }
}

impl ModuleT for HolisticHead {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        self.forward(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn top_k_follows_the_official_rounding() -> Result<()> {
        let dev = Device::Cpu;
        // 196 cells (14×14) → K = 19; 49 → 4; 4 → 1 (floor 0.4, then at least one).
        for (n, k) in [(196usize, 19usize), (49, 4), (4, 1), (70, 7)] {
            let row: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let t = Tensor::from_vec(row, (1, n), &dev)?;
            let got = top_k_mean(&t, 0.1)?.to_vec1::<f32>()?[0];
            let want = (n - k..n).map(|i| i as f32).sum::<f32>() / k as f32;
            assert!((got - want).abs() < 1e-4, "n={n}: {got} vs {want}");
        }
        Ok(())
    }

    #[test]
    fn top_k_gradient_reaches_only_selected_cells() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(
            &[[3f32, -1., 7., 2., 0., 5., 1., 4., 6., 8.]],
            &dev,
        )?)?;
        let y = top_k_mean(x.as_tensor(), 0.2)?; // K = 2: 8 and 7
        let g = y
            .sum_all()?
            .backward()?
            .get(x.as_tensor())
            .unwrap()
            .to_vec2::<f32>()?;
        assert_eq!(g[0], [0., 0., 0.5, 0., 0., 0., 0., 0., 0., 0.5]);
        Ok(())
    }
}
