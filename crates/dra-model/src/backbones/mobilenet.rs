//! torchvision's MobileNetV2 feature extractor (`mobilenet_v2().features`: 1280 channels,
//! stride 32), the lightweight backbone the paper advises for small data sets (appendix D).
//! Tensor names are torchvision's (`features.N.…`).

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::onnx::Graph;
use crate::ops::{BatchNorm2d, Conv2d, Kernels};

/// Convolution + BatchNorm2d + optional ReLU6 (torchvision's `Conv2dNormActivation`).
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
    relu6: bool,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        relu6: bool,
        kernels: Kernels,
        vb: VarBuilder,
    ) -> Result<Self> {
        let config = Conv2dConfig {
            padding: (k - 1) / 2,
            stride,
            groups,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv2d::new(cin, cout, k, config, false, kernels, vb.pp("0"))?,
            bn: BatchNorm2d::new(cout, kernels, vb.pp("1"))?,
            relu6,
        })
    }

    /// A convolution and BatchNorm2d that sit side by side in the parent (`conv.N`, `conv.N+1`).
    fn flat(
        cin: usize,
        cout: usize,
        kernels: Kernels,
        conv_vb: VarBuilder,
        bn_vb: VarBuilder,
    ) -> Result<Self> {
        let config = Conv2dConfig::default();
        Ok(Self {
            conv: Conv2d::new(cin, cout, 1, config, false, kernels, conv_vb)?,
            bn: BatchNorm2d::new(cout, kernels, bn_vb)?,
            relu6: false,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv.forward(x)?;
        if self.relu6 {
            // ReLU6 fused into BatchNorm's pass and its backward: no tensor or pass of its own.
            self.bn.forward_relu6_t(&y, train)
        } else {
            self.bn.forward_t(&y, train)
        }
    }

    /// The layer in eval mode as ONNX `Conv`, `BatchNormalization` and, for ReLU6, `Clip`
    /// to [0, 6]; `name` is torchvision's (`features.N`), the convolution at `name.0` and the
    /// BatchNorm at `name.1` as in [`ConvBn::new`].
    fn export(&self, g: &mut Graph, conv_name: &str, bn_name: &str, x: &str) -> Result<String> {
        let y = self.conv.export(g, conv_name, x)?;
        let y = self.bn.export(g, bn_name, &y, false)?;
        if !self.relu6 {
            return Ok(y);
        }
        let dev = candle_core::Device::Cpu;
        let low = g.constant("relu6.min", &Tensor::new(0f32, &dev)?)?;
        let high = g.constant("relu6.max", &Tensor::new(6f32, &dev)?)?;
        Ok(g.node("Clip", &format!("{bn_name}.relu6"), &[&y, &low, &high], &[]))
    }
}

/// torchvision's `InvertedResidual`.
#[derive(Debug, Clone)]
struct InvertedResidual {
    layers: Vec<ConvBn>,
    residual: bool,
}

impl InvertedResidual {
    fn new(
        cin: usize,
        cout: usize,
        stride: usize,
        expand: usize,
        kernels: Kernels,
        vb: VarBuilder,
    ) -> Result<Self> {
        let hidden = cin * expand;
        let conv = vb.pp("conv");
        let mut layers = Vec::new();
        let mut i = 0;
        if expand != 1 {
            layers.push(ConvBn::new(
                cin,
                hidden,
                1,
                1,
                1,
                true,
                kernels,
                conv.pp(i),
            )?);
            i += 1;
        }
        layers.push(ConvBn::new(
            hidden,
            hidden,
            3,
            stride,
            hidden,
            true,
            kernels,
            conv.pp(i),
        )?);
        let (conv_vb, bn_vb) = (conv.pp(i + 1), conv.pp(i + 2));
        layers.push(ConvBn::flat(hidden, cout, kernels, conv_vb, bn_vb)?);
        Ok(Self {
            layers,
            residual: stride == 1 && cin == cout,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for layer in &self.layers {
            y = layer.forward_t(&y, train)?;
        }
        if self.residual {
            y + x
        } else {
            Ok(y)
        }
    }

    /// The block in eval mode as ONNX nodes, its tensors named as torchvision's under `name`
    /// (`features.N`): `conv.0.0`/`conv.0.1`, …, the projection at `conv.K` and `conv.K+1`.
    fn export(&self, g: &mut Graph, name: &str, x: &str) -> Result<String> {
        let last = self.layers.len() - 1;
        let mut y = x.to_string();
        for (i, layer) in self.layers.iter().enumerate() {
            let (conv, bn) = if i == last {
                (format!("{name}.conv.{i}"), format!("{name}.conv.{}", i + 1))
            } else {
                (format!("{name}.conv.{i}.0"), format!("{name}.conv.{i}.1"))
            };
            y = layer.export(g, &conv, &bn, &y)?;
        }
        Ok(if self.residual {
            g.node("Add", &format!("{name}.add"), &[&y, x], &[])
        } else {
            y
        })
    }
}

/// The feature extractor.
#[derive(Debug, Clone)]
pub struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    head: ConvBn,
}

impl MobileNetV2 {
    /// Number of output channels (torchvision's last 1×1 convolution).
    pub const OUT_CHANNELS: usize = 1280;

    /// Builds the network on `kernels` from `vb`, the torchvision model's root: tensors are
    /// read under `features.*`.
    pub fn new(kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        let f = vb.pp("features");
        let stem = ConvBn::new(3, 32, 3, 2, 1, true, kernels, f.pp(0))?;
        // (expansion t, channels c, repeats n, first stride s), torchvision's table.
        let settings = [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ];
        let mut blocks = Vec::new();
        let mut cin = 32;
        for (t, c, n, s) in settings {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                blocks.push(InvertedResidual::new(
                    cin,
                    c,
                    stride,
                    t,
                    kernels,
                    f.pp(blocks.len() + 1),
                )?);
                cin = c;
            }
        }
        let head = ConvBn::new(
            320,
            Self::OUT_CHANNELS,
            1,
            1,
            1,
            true,
            kernels,
            f.pp(blocks.len() + 1),
        )?;
        Ok(Self { stem, blocks, head })
    }

    /// The network in eval mode as ONNX nodes on the value `x`, its tensors as constants
    /// named as torchvision's under `name` (`name.features.N.…`); returns the feature map's
    /// name.
    pub fn export(&self, g: &mut Graph, name: &str, x: &str) -> Result<String> {
        let f = format!("{name}.features");
        let mut y = self
            .stem
            .export(g, &format!("{f}.0.0"), &format!("{f}.0.1"), x)?;
        for (i, block) in self.blocks.iter().enumerate() {
            y = block.export(g, &format!("{f}.{}", i + 1), &y)?;
        }
        let n = self.blocks.len() + 1;
        self.head
            .export(g, &format!("{f}.{n}.0"), &format!("{f}.{n}.1"), &y)
    }
}

impl ModuleT for MobileNetV2 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.stem.forward_t(x, train)?;
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        self.head.forward_t(&x, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn torchvision_names_and_shapes() -> Result<()> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = MobileNetV2::new(Kernels::default(), vb)?;
        {
            let data = varmap.data().lock().unwrap();
            // torchvision's state dict has 312 entries, 52 of them num_batches_tracked.
            assert_eq!(data.len(), 260);
            assert_eq!(data["features.0.0.weight"].dims(), [32, 3, 3, 3]);
            assert_eq!(data["features.1.conv.0.0.weight"].dims(), [32, 1, 3, 3]);
            assert_eq!(data["features.1.conv.2.running_var"].dims(), [16]);
            assert_eq!(data["features.17.conv.2.weight"].dims(), [320, 960, 1, 1]);
            assert_eq!(data["features.18.1.running_var"].dims(), [1280]);
        }
        let y = net.forward_t(
            &Tensor::randn(0f32, 1., (2, 3, 64, 64), &Device::Cpu)?,
            true,
        )?;
        assert_eq!(y.dims(), [2, 1280, 2, 2]);
        Ok(())
    }
}
