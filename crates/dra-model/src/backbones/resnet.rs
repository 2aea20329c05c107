//! torchvision's ResNet-18 up to `layer4` (512 channels, stride 32), with its tensor names and
//! BatchNorm2d that uses batch statistics in training, as DRA fine-tunes it.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::onnx::Graph;
use crate::ops::{BatchNorm2d, Conv2d, Kernels, MaxPool2d};

/// A `k × k` convolution without bias, padded by `k / 2`.
fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    kernels: Kernels,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let config = Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    Conv2d::new(cin, cout, k, config, false, kernels, vb)
}

/// torchvision's `BasicBlock`.
#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl BasicBlock {
    fn new(
        cin: usize,
        cout: usize,
        stride: usize,
        kernels: Kernels,
        vb: VarBuilder,
    ) -> Result<Self> {
        let bn = |vb: VarBuilder| BatchNorm2d::new(cout, kernels, vb);
        let downsample = if stride != 1 || cin != cout {
            let d = vb.pp("downsample");
            Some((
                conv(cin, cout, 1, stride, kernels, d.pp("0"))?,
                bn(d.pp("1"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: conv(cin, cout, 3, stride, kernels, vb.pp("conv1"))?,
            bn1: bn(vb.pp("bn1"))?,
            conv2: conv(cout, cout, 3, 1, kernels, vb.pp("conv2"))?,
            bn2: bn(vb.pp("bn2"))?,
            downsample,
        })
    }

    /// The block in eval mode as ONNX nodes on the value `x`, its tensors named under
    /// `name` as torchvision names them.
    fn export(&self, g: &mut Graph, name: &str, x: &str) -> Result<String> {
        let y = self.conv1.export(g, &format!("{name}.conv1"), x)?;
        let y = self.bn1.export(g, &format!("{name}.bn1"), &y, true)?;
        let y = self.conv2.export(g, &format!("{name}.conv2"), &y)?;
        let y = self.bn2.export(g, &format!("{name}.bn2"), &y, false)?;
        let identity = match &self.downsample {
            Some((c, b)) => {
                let d = c.export(g, &format!("{name}.downsample.0"), x)?;
                b.export(g, &format!("{name}.downsample.1"), &d, false)?
            }
            None => x.to_string(),
        };
        let sum = g.node("Add", &format!("{name}.add"), &[&y, &identity], &[]);
        Ok(g.node("Relu", &format!("{name}.relu"), &[&sum], &[]))
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv1.forward(x)?;
        let y = self.bn1.forward_relu_t(&y, train)?;
        let y = self.conv2.forward(&y)?;
        let identity = match &self.downsample {
            Some((c, b)) => b.forward_t(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        self.bn2.forward_add_relu_t(&y, &identity, train)
    }
}

/// The feature extractor: stem → max-pool → layer1..layer4.
#[derive(Debug, Clone)]
pub struct ResNet18 {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    pool: MaxPool2d,
    layers: Vec<Vec<BasicBlock>>,
}

impl ResNet18 {
    /// Number of output channels.
    pub const OUT_CHANNELS: usize = 512;

    /// Builds the network on `kernels` from `vb`, whose prefix is the torchvision model's root
    /// (for DRA, `feature_extractor.net`).
    pub fn new(kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        // The stem sees the image, which needs no gradient.
        let stem = Conv2dConfig {
            padding: 3,
            stride: 2,
            ..Default::default()
        };
        let conv1 =
            Conv2d::new(3, 64, 7, stem, false, kernels, vb.pp("conv1"))?.without_input_grad();
        let bn1 = BatchNorm2d::new(64, kernels, vb.pp("bn1"))?;
        let mut layers = Vec::new();
        let mut cin = 64;
        for (i, cout) in [64, 128, 256, 512].into_iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let lvb = vb.pp(format!("layer{}", i + 1));
            layers.push(vec![
                BasicBlock::new(cin, cout, stride, kernels, lvb.pp("0"))?,
                BasicBlock::new(cout, cout, 1, kernels, lvb.pp("1"))?,
            ]);
            cin = cout;
        }
        Ok(Self {
            conv1,
            bn1,
            pool: MaxPool2d::new(3, 2, 1, kernels),
            layers,
        })
    }
}

impl ResNet18 {
    /// The network in eval mode (BatchNorm with its running statistics) as ONNX nodes on the
    /// value `x`, its tensors named under `name` (the prefix its weights have, e.g.
    /// `feature_extractor.net`); returns the name of the `layer4` features.
    pub fn export(&self, g: &mut Graph, name: &str, x: &str) -> Result<String> {
        let y = self.conv1.export(g, &format!("{name}.conv1"), x)?;
        let y = self.bn1.export(g, &format!("{name}.bn1"), &y, true)?;
        let mut y = self.pool.export(g, &format!("{name}.maxpool"), &y);
        for (i, layer) in self.layers.iter().enumerate() {
            for (j, block) in layer.iter().enumerate() {
                y = block.export(g, &format!("{name}.layer{}.{j}", i + 1), &y)?;
            }
        }
        Ok(y)
    }
}

impl ModuleT for ResNet18 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let fused = if train {
            crate::ops::stem::forward_train(&self.conv1, &self.bn1, &self.pool, x)?
        } else {
            None
        };
        let mut x = match fused {
            Some(x) => x,
            None => {
                let x = self.conv1.forward(x)?;
                let x = self.bn1.forward_relu_t(&x, train)?;
                self.pool.forward(&x)?
            }
        };
        for layer in &self.layers {
            for block in layer {
                x = block.forward_t(&x, train)?;
            }
        }
        Ok(x)
    }
}
