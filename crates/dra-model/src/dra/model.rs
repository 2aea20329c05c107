//! The whole DRA model: backbone plus the four heads on a two-level image pyramid.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use super::heads::{CompositeHead, HolisticHead, PlainHead};
use crate::backbones::Backbone;
use crate::head_set::HeadSet;
use crate::model_config::ModelConfig;
use crate::onnx::{Attr, Graph};

/// Per-image scores of the four heads, each `(B,)` and averaged over the pyramid's scales.
#[derive(Debug, Clone)]
pub struct HeadScores {
    /// g_n, normality (trained towards 1 on normals).
    pub normal: Tensor,
    /// g_s, seen abnormality.
    pub seen: Tensor,
    /// g_p, pseudo abnormality.
    pub pseudo: Tensor,
    /// g_r, latent residual abnormality.
    pub residual: Tensor,
}

impl HeadScores {
    /// Each head's mean over the pyramid's levels (official: `torch.cat(…, 1).mean(1)`).
    pub fn average(scales: &[HeadScores]) -> Result<HeadScores> {
        let mean = |pick: fn(&HeadScores) -> &Tensor| -> Result<Tensor> {
            let per_scale: Vec<&Tensor> = scales.iter().map(pick).collect();
            pyramid_mean(&per_scale)
        };
        Ok(HeadScores {
            normal: mean(|s| &s.normal)?,
            seen: mean(|s| &s.seen)?,
            pseudo: mean(|s| &s.pseudo)?,
            residual: mean(|s| &s.residual)?,
        })
    }

    /// The test-time anomaly score s = −g_n + g_s + g_p + g_r, `(B,)`.
    pub fn anomaly_score(&self) -> Result<Tensor> {
        self.anomaly_score_of(HeadSet::ALL)
    }

    /// The anomaly score of a subset of the heads: the abnormality heads' sum (seen, pseudo,
    /// residual, in that order), minus g_n when the normality head is in the set; with all
    /// four, exactly [`HeadScores::anomaly_score`].
    pub fn anomaly_score_of(&self, heads: HeadSet) -> Result<Tensor> {
        let sum = heads.sum_abnormal([&self.seen, &self.pseudo, &self.residual])?;
        if heads.has(0) {
            sum - &self.normal
        } else {
            Ok(sum)
        }
    }
}

/// DRA with the official module names: `feature_extractor.net.*`, `holistic_head.*`,
/// `seen_head.*`, `pseudo_head.*`, `composite_head.*`.
#[derive(Debug, Clone)]
pub struct Dra {
    feature_extractor: Backbone,
    heads: DraHeads,
    config: ModelConfig,
}

/// DRA's four heads on one level's feature maps: everything of [`Dra`] after the backbone.
/// Apart so that heads can be trained on stored features (AHL trains fresh heads on a trained
/// backbone's features); [`Dra`] runs them on each level of its pyramid.
#[derive(Debug, Clone)]
pub struct DraHeads {
    holistic_head: HolisticHead,
    seen_head: PlainHead,
    pseudo_head: PlainHead,
    composite_head: CompositeHead,
    n_ref: usize,
    heads: HeadSet,
}

impl DraHeads {
    /// The heads for `config`'s backbone, under `vb` with the official names (`holistic_head`,
    /// `seen_head`, `pseudo_head`, `composite_head`).
    pub fn new(config: &ModelConfig, vb: &VarBuilder) -> Result<Self> {
        let (c, rate, kernels) = (
            config.backbone.out_channels(),
            config.topk_rate,
            config.kernels,
        );
        Ok(Self {
            holistic_head: HolisticHead::new(c, kernels, vb.pp("holistic_head"))?,
            seen_head: PlainHead::new(c, rate, kernels, vb.pp("seen_head"))?,
            pseudo_head: PlainHead::new(c, rate, kernels, vb.pp("pseudo_head"))?,
            composite_head: CompositeHead::new(c, rate, kernels, vb.pp("composite_head"))?,
            n_ref: config.n_ref,
            heads: config.heads,
        })
    }

    /// The heads' scores of feature maps `(n_ref + B, C, h, w)` whose first `n_ref` rows are
    /// the references', and with `with_map` the anomaly map `(B, h, w)`: the sum of the chosen
    /// abnormality heads' cell scores, which their top-K means are taken from.
    pub fn forward_t(
        &self,
        features: &Tensor,
        train: bool,
        with_map: bool,
    ) -> Result<(HeadScores, Option<Tensor>)> {
        let n_ref = self.n_ref;
        let (total, _, h, w) = features.dims4()?;
        if total <= n_ref {
            candle_core::bail!("a DRA batch needs more than {n_ref} images (the references)");
        }
        let references = features.narrow(0, 0, n_ref)?;
        let features = features.narrow(0, n_ref, total - n_ref)?;
        let seen = self.seen_head.cell_scores(&features)?;
        let pseudo = self.pseudo_head.cell_scores(&features)?;
        let residual = self
            .composite_head
            .cell_scores(&features, &references, train)?;
        let map = if with_map {
            let sum = self.heads.sum_abnormal([&seen, &pseudo, &residual])?;
            Some(sum.reshape((total - n_ref, h, w))?)
        } else {
            None
        };
        let scores = HeadScores {
            normal: self.holistic_head.forward(&features)?,
            seen: self.seen_head.score_cells(&seen)?,
            pseudo: self.pseudo_head.score_cells(&pseudo)?,
            residual: self.composite_head.score_cells(&residual)?,
        };
        Ok((scores, map))
    }
}

/// The names of an exported DRA graph's values per image: the score, each head's score, and
/// the anomaly map at the image's size, `(B, S, S)`.
#[derive(Clone, Debug)]
pub struct ExportedScores {
    /// s = −g_n + g_s + g_p + g_r (or the chosen heads' score), `(B,)`.
    pub score: String,
    /// g_n, g_s, g_p, g_r, each `(B,)`, averaged over the pyramid.
    pub heads: [String; 4],
    /// The sum of the chosen abnormality heads' cell scores at full size, upsampled to the
    /// image as [`upsample_bilinear`] does, `(B, S, S)`.
    pub map: String,
}

impl DraHeads {
    /// The heads in eval mode as ONNX nodes on one level's feature maps of h·w = `cells`
    /// cells, the residual head against the constant `mean_reference`: returns the names of
    /// g_n, g_s, g_p, g_r `(B,)` and of the map's cells `(B, h·w)`.
    fn export(
        &self,
        g: &mut Graph,
        features: &str,
        mean_reference: &str,
        cells: usize,
    ) -> Result<([String; 4], String)> {
        let normal = self.holistic_head.export(g, "holistic_head", features)?;
        let (seen_cells, seen) = self.seen_head.export(g, "seen_head", features, cells)?;
        let (pseudo_cells, pseudo) = self.pseudo_head.export(g, "pseudo_head", features, cells)?;
        let (residual_cells, residual) =
            self.composite_head
                .export(g, "composite_head", features, mean_reference, cells)?;
        let map = export_sum_abnormal(
            g,
            self.heads,
            "map",
            [&seen_cells, &pseudo_cells, &residual_cells],
        )?;
        Ok(([normal, seen, pseudo, residual], map))
    }
}

/// [`HeadSet::sum_abnormal`] as ONNX `Add` nodes, in the same order.
fn export_sum_abnormal(
    g: &mut Graph,
    heads: HeadSet,
    name: &str,
    values: [&str; 3],
) -> Result<String> {
    let mut sum: Option<String> = None;
    for (index, v) in [(1, values[0]), (2, values[1]), (3, values[2])] {
        if heads.has(index) {
            sum = Some(match sum {
                Some(s) => g.node("Add", name, &[&s, v], &[]),
                None => v.to_string(),
            });
        }
    }
    sum.ok_or_else(|| candle_core::Error::Msg("no abnormality head in the set".into()))
}

impl Dra {
    /// The model in eval mode as ONNX nodes on the value `x` (queries only, `(B, 3, S, S)`,
    /// S the size of `references`), with `references` (`(n_ref, 3, S, S)`, normalised as the
    /// queries) baked in: their mean feature map at each level of the pyramid is a constant,
    /// so a score depends on the image alone, as with a fixed reference set. The map is
    /// brought to S × S pixels as [`upsample_bilinear`] does.
    pub fn export(&self, g: &mut Graph, x: &str, references: &Tensor) -> Result<ExportedScores> {
        let (_, _, h, w) = references.dims4()?;
        if h != w {
            candle_core::bail!("the export takes square images; the references are {h}×{w}");
        }
        let mut levels: Vec<[String; 4]> = Vec::new();
        let mut map = None;
        for s in 0..self.config.n_scales {
            let xs = export_downsample_nearest(g, x, (h, w), s);
            let features = self.feature_extractor.export(g, &xs)?;
            let reference_features = self.features_t(references, s, false)?;
            let (_, _, fh, fw) = reference_features.dims4()?;
            let mean = g.constant(
                &format!("composite_head.mean_reference.{s}"),
                &reference_features.mean_keepdim(0)?,
            )?;
            let (scores, cells) = self.heads.export(g, &features, &mean, fh * fw)?;
            if s == 0 {
                let shape = g.constant_i64("map.shape", &[-1, fh as i64, fw as i64]);
                let cells = g.node("Reshape", "map.cells", &[&cells, &shape], &[]);
                map = Some(export_upsample_bilinear(g, &cells, (fh, fw), h)?);
            }
            levels.push(scores);
        }
        let heads = export_pyramid_mean(g, &levels, ["g_n", "g_s", "g_p", "g_r"])?;
        let abnormal = export_sum_abnormal(
            g,
            self.config.heads,
            "abnormal",
            [&heads[1], &heads[2], &heads[3]],
        )?;
        let score = if self.config.heads.has(0) {
            g.node("Sub", "score", &[&abnormal, &heads[0]], &[])
        } else {
            abnormal
        };
        Ok(ExportedScores {
            score,
            heads,
            map: map.expect("level 0 gives the map"),
        })
    }

    /// Builds the model from `vb`, whose prefix is the model's root (tensors under
    /// `feature_extractor.net`, `holistic_head`, …).
    pub fn new(config: ModelConfig, vb: VarBuilder) -> Result<Self> {
        let feature_extractor = Backbone::of_model(config.backbone, config.kernels, &vb)?;
        Ok(Self {
            feature_extractor,
            heads: DraHeads::new(&config, &vb)?,
            config,
        })
    }

    /// The four heads, without the backbone.
    pub fn heads(&self) -> &DraHeads {
        &self.heads
    }

    /// The backbone's feature maps of a batch at pyramid level `s` (level 0 is the batch
    /// itself), in eval or train mode: what the heads score at that level.
    pub fn features_t(&self, images: &Tensor, s: usize, train: bool) -> Result<Tensor> {
        self.feature_extractor
            .forward_t(&downsample_nearest(images, s)?, train)
    }

    /// The constants the model was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Scores a batch whose first `n_ref` images are the references, as the official
    /// `DRA.forward`: each head's score is the mean over the pyramid's scales. In training every
    /// head scores every image (BatchNorm in train mode); which rows each head's loss sees is
    /// the loss's business ([`super::DraLoss`]), which gives the same values and gradients as
    /// the official per-head row selection.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<HeadScores> {
        HeadScores::average(&self.forward_scales(images, train)?)
    }

    /// Per-cell anomaly evidence at full size, in eval mode: the sum of the seen, pseudo and
    /// residual heads' absolute cell scores, `(B, h, w)` (references excluded). Upsampled to the
    /// image, it shows where the top-K heads found abnormality.
    pub fn anomaly_maps(&self, images: &Tensor) -> Result<Tensor> {
        let (_, map) = self.level(images, 0, false, true)?;
        Ok(map.expect("a map was asked for"))
    }

    /// The eval-mode scores of [`Dra::forward_t`] and the maps of [`Dra::anomaly_maps`] from one
    /// pass: the maps reuse the full-size level's cell scores, so the scores are those of
    /// `forward_t(images, false)` bit for bit and the maps cost no extra backbone pass.
    pub fn scores_and_maps(&self, images: &Tensor) -> Result<(HeadScores, Tensor)> {
        let mut scales = Vec::with_capacity(self.config.n_scales);
        let mut map = None;
        for s in 0..self.config.n_scales {
            let (scores, level_map) = self.level(images, s, false, s == 0)?;
            scales.push(scores);
            map = map.or(level_map);
        }
        let map = map.expect("level 0 gives the map");
        Ok((HeadScores::average(&scales)?, map))
    }

    /// The four heads' scores at each level of the pyramid (level 0 is the full size).
    pub fn forward_scales(&self, images: &Tensor, train: bool) -> Result<Vec<HeadScores>> {
        (0..self.config.n_scales)
            .map(|s| Ok(self.level(images, s, train, false)?.0))
            .collect()
    }

    /// The heads' scores at pyramid level `s`, and with `with_map` the anomaly map `(B, h, w)`
    /// of that level: the sum of the seen, pseudo and residual cell scores the heads' top-K
    /// means are taken from.
    fn level(
        &self,
        images: &Tensor,
        s: usize,
        train: bool,
        with_map: bool,
    ) -> Result<(HeadScores, Option<Tensor>)> {
        let n_ref = self.config.n_ref;
        if images.dim(0)? <= n_ref {
            candle_core::bail!("a DRA batch needs more than {n_ref} images (the references)");
        }
        self.heads
            .forward_t(&self.features_t(images, s, train)?, train, with_map)
    }
}

/// The mean over the pyramid's levels of per-image scores given level by level, each `(B,)`
/// (official: `torch.cat(…, 1).mean(1)`): `(B,)`.
pub(crate) fn pyramid_mean<T: AsRef<Tensor>>(per_scale: &[T]) -> Result<Tensor> {
    Tensor::stack(per_scale, 1)?.mean(1)
}

/// PyTorch's `F.interpolate(x, size=(H >> s, W >> s))` (mode `nearest`) of an NCHW batch: the
/// image pyramid's level `s` (level 0 is the batch itself).
pub(crate) fn downsample_nearest(x: &Tensor, level: usize) -> Result<Tensor> {
    if level == 0 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4()?;
    let index = |input: usize| -> Result<Tensor> {
        let idx: Vec<u32> = nearest_indices(input, level)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        Tensor::new(idx.as_slice(), x.device())
    };
    x.index_select(&index(h)?, 2)?.index_select(&index(w)?, 3)
}

/// The number of cells (h·w) of `backbone`'s feature map of an image of `size` = (h, w)
/// pixels at pyramid level `level`: what a top-K head's K follows from, found by running the
/// network once on a blank image.
pub(crate) fn feature_cells(
    backbone: &Backbone,
    size: (usize, usize),
    level: usize,
) -> Result<usize> {
    let blank = Tensor::zeros(
        (1, 3, size.0, size.1),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    let features = backbone.forward_t(&downsample_nearest(&blank, level)?, false)?;
    let (_, _, h, w) = features.dims4()?;
    Ok(h * w)
}

/// The rows (or columns) of an axis of `input` pixels that nearest-neighbour downsampling to
/// pyramid level `level` keeps, as PyTorch's `nearest` mode picks them.
fn nearest_indices(input: usize, level: usize) -> Vec<i64> {
    let output = (input >> level).max(1);
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| {
            if input == 2 * output {
                (2 * i) as i64
            } else {
                ((i as f32 * scale).floor() as usize).min(input - 1) as i64
            }
        })
        .collect()
}

/// [`downsample_nearest`] as ONNX `Gather`s of the same rows and columns on the value `x`
/// of `(h, w)` pixels; level 0 is `x` itself.
pub(crate) fn export_downsample_nearest(
    g: &mut Graph,
    x: &str,
    (h, w): (usize, usize),
    level: usize,
) -> String {
    if level == 0 {
        return x.to_string();
    }
    let rows = g.constant_i64(&format!("pyramid.{level}.rows"), &nearest_indices(h, level));
    let xs = g.node(
        "Gather",
        &format!("pyramid.{level}.h"),
        &[x, &rows],
        &[Attr::Int("axis", 2)],
    );
    let cols = g.constant_i64(&format!("pyramid.{level}.cols"), &nearest_indices(w, level));
    g.node(
        "Gather",
        &format!("pyramid.{level}.w"),
        &[&xs, &cols],
        &[Attr::Int("axis", 3)],
    )
}

/// [`pyramid_mean`] as ONNX nodes: for each of the values per level (`levels[s][k]`, each
/// `(B,)`), their sum over the levels divided by the count, named `names[k]`.
pub(crate) fn export_pyramid_mean<const N: usize>(
    g: &mut Graph,
    levels: &[[String; N]],
    names: [&str; N],
) -> Result<[String; N]> {
    let count = g.constant(
        "pyramid.count",
        &Tensor::new(levels.len() as f32, &candle_core::Device::Cpu)?,
    )?;
    Ok(std::array::from_fn(|k| {
        let mut sum = levels[0][k].clone();
        for level in &levels[1..] {
            sum = g.node("Add", "pyramid.sum", &[&sum, &level[k]], &[]);
        }
        g.node("Div", names[k], &[&sum, &count], &[])
    }))
}

/// For each of `size` output pixels along an axis of `n` cells: the two cells it lies
/// between and the second one's weight, with cell centres at `(i + ½) · size / n` and clamped
/// borders (PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`).
fn bilinear_axis(n: usize, size: usize) -> Vec<(usize, usize, f32)> {
    (0..size)
        .map(|x| {
            let f = ((x as f32 + 0.5) * n as f32 / size as f32 - 0.5).clamp(0.0, (n - 1) as f32);
            let i0 = f.floor() as usize;
            (i0, (i0 + 1).min(n - 1), f - i0 as f32)
        })
        .collect()
}

/// Bilinear upsampling of an `h × w` map (row-major) to `size × size` pixels: the usual way
/// to lay a feature map over its image (PyTorch's `F.interpolate(mode="bilinear",
/// align_corners=False)`). `--save-maps`, the overlays, the pixel metrics and the exported
/// model's `anomaly_map` all bring DRA's map to the image this way.
pub fn upsample_bilinear(values: &[f32], (h, w): (usize, usize), size: usize) -> Vec<f32> {
    let (columns, rows) = (bilinear_axis(w, size), bilinear_axis(h, size));
    let at = |x: usize, y: usize| values[y * w + x];
    let mut out = Vec::with_capacity(size * size);
    for &(y0, y1, ty) in &rows {
        for &(x0, x1, tx) in &columns {
            let top = at(x0, y0) * (1.0 - tx) + at(x1, y0) * tx;
            let bottom = at(x0, y1) * (1.0 - tx) + at(x1, y1) * tx;
            out.push(top * (1.0 - ty) + bottom * ty);
        }
    }
    out
}

/// [`upsample_bilinear`] as two ONNX `MatMul`s on maps `(B, h, w)`: the rows' weights `(size,
/// h)` · map · the columns' weights `(w, size)`, the same weights as constants, so no
/// runtime's reading of `Resize`'s modes can change the map.
fn export_upsample_bilinear(
    g: &mut Graph,
    maps: &str,
    (h, w): (usize, usize),
    size: usize,
) -> Result<String> {
    let weights = |n: usize, transpose: bool| -> Result<Tensor> {
        let mut m = vec![0f32; n * size];
        for (x, (i0, i1, t)) in bilinear_axis(n, size).into_iter().enumerate() {
            m[i0 * size + x] += 1.0 - t;
            m[i1 * size + x] += t;
        }
        let m = Tensor::from_vec(m, (n, size), &candle_core::Device::Cpu)?;
        if transpose {
            m.t()?.contiguous()
        } else {
            Ok(m)
        }
    };
    let columns = g.constant("map.upsample.columns", &weights(w, false)?)?;
    let rows = g.constant("map.upsample.rows", &weights(h, true)?)?;
    let wide = g.node("MatMul", "map.upsample.w", &[maps, &columns], &[]);
    Ok(g.node("MatMul", "anomaly_map", &[&rows, &wide], &[]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn parameter_names_follow_the_official_state_dict() -> Result<()> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        Dra::new(ModelConfig::default(), vb)?;
        let data = varmap.data().lock().unwrap();
        for name in [
            "feature_extractor.net.conv1.weight",
            "feature_extractor.net.bn1.running_var",
            "feature_extractor.net.layer2.0.downsample.0.weight",
            "feature_extractor.net.layer4.1.bn2.bias",
            "holistic_head.fc1.weight",
            "holistic_head.fc2.bias",
            "seen_head.scoring.weight",
            "pseudo_head.scoring.bias",
            "composite_head.conv.0.weight",
            "composite_head.conv.1.running_mean",
            "composite_head.scoring.weight",
        ] {
            assert!(data.contains_key(name), "missing {name}");
        }
        let params: usize = data
            .iter()
            .filter(|(n, _)| !crate::weights::is_buffer(n))
            .map(|(_, v)| v.elem_count())
            .sum();
        // 11.18 M backbone + 2.36 M composite conv (+ BN) + 0.13 M holistic + 3 × 513.
        assert_eq!(params, 11_176_512 + 2_359_808 + 1_024 + 131_585 + 3 * 513);
        Ok(())
    }

    /// A DRA with two references and its variables.
    fn small_model() -> Result<(VarMap, Dra)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let config = ModelConfig {
            n_ref: 2,
            ..Default::default()
        };
        let model = Dra::new(config, vb)?;
        Ok((varmap, model))
    }

    #[test]
    fn forward_shapes_and_score() -> Result<()> {
        let (_, model) = small_model()?;
        let x = Tensor::randn(0f32, 1., (5, 3, 64, 64), &Device::Cpu)?;
        let s = model.forward_t(&x, true)?;
        assert_eq!(s.normal.dims(), [3]);
        assert_eq!(s.residual.dims(), [3]);
        assert_eq!(s.anomaly_score()?.dims(), [3]);
        for t in [&s.normal, &s.seen, &s.pseudo, &s.residual] {
            assert!(
                t.to_vec1::<f32>()?.iter().all(|v| *v >= 0.0),
                "scores are absolute values"
            );
        }
        Ok(())
    }

    #[test]
    fn maps_come_with_the_same_scores_in_one_pass() -> Result<()> {
        let (varmap, model) = small_model()?;
        crate::reset_parameters(&varmap, 3)?;
        let x = Tensor::randn(0f32, 1., (5, 3, 64, 64), &Device::Cpu)?;
        let alone = model.forward_t(&x, false)?;
        let (with, maps) = model.scores_and_maps(&x)?;
        for (a, b) in [
            (&alone.normal, &with.normal),
            (&alone.seen, &with.seen),
            (&alone.pseudo, &with.pseudo),
            (&alone.residual, &with.residual),
        ] {
            assert_eq!(a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
        }
        assert_eq!(maps.dims(), [3, 2, 2]);
        assert_eq!(
            maps.flatten_all()?.to_vec1::<f32>()?,
            model.anomaly_maps(&x)?.flatten_all()?.to_vec1::<f32>()?
        );
        // The map is the evidence the seen head's top-K mean is taken from, plus the others'.
        assert!(maps
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| *v >= 0.0));
        Ok(())
    }

    #[test]
    fn heads_on_stored_features_score_as_the_model() -> Result<()> {
        let (varmap, model) = small_model()?;
        crate::reset_parameters(&varmap, 5)?;
        let x = Tensor::randn(0f32, 1., (5, 3, 64, 64), &Device::Cpu)?;
        let levels = model.forward_scales(&x, false)?;
        for (s, level) in levels.iter().enumerate() {
            let features = model.features_t(&x, s, false)?;
            let (alone, _) = model.heads().forward_t(&features, false, false)?;
            for (a, b) in [
                (&alone.normal, &level.normal),
                (&alone.seen, &level.seen),
                (&alone.pseudo, &level.pseudo),
                (&alone.residual, &level.residual),
            ] {
                assert_eq!(a.to_vec1::<f32>()?, b.to_vec1::<f32>()?, "level {s}");
            }
        }
        Ok(())
    }

    #[test]
    fn downsample_keeps_every_second_pixel() -> Result<()> {
        let x = Tensor::arange(0f32, 16., &Device::Cpu)?.reshape((1, 1, 4, 4))?;
        let y = downsample_nearest(&x, 1)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [0., 2., 8., 10.]);
        Ok(())
    }
}
