//! Export to ONNX: the protobuf messages of a model file ([`proto`], written out, so that a
//! build needs nothing but cargo) and the graph the layers write themselves into ([`Graph`]):
//! each layer of the scoring path has an `export` beside its `forward` that adds the same
//! computation as standard ONNX operators of one opset ([`OPSET`]).
//!
//! [`Detector::to_onnx`](crate::Detector::to_onnx) writes a whole detector in eval mode: DRA on either backbone (the image
//! pyramid as `Gather`s of the rows and columns nearest-neighbour downsampling keeps, the
//! residual head against the references' mean feature map per level baked in as a constant,
//! the heads' scores, the anomaly score of the chosen heads, and the anomaly map upsampled to
//! the image by two `MatMul`s with the bilinear weights) and every baseline. The tests check
//! the graphs against candle's scoring in tract, an independent runtime.

mod check;
mod graph;
pub mod proto;

pub use check::check;
pub use graph::{encode, Attr, Dim, Graph, OPSET};

/// The name of an exported model's input: a batch of preprocessed images `(N, 3, S, S)`.
pub const INPUT: &str = "image";
/// The name of the anomaly score output, `(N,)`.
pub const SCORE: &str = "score";
/// The names of the head score outputs, `(N,)` each: g_n, g_s, g_p, g_r, as `scores.csv`
/// names its columns.
pub const HEAD_OUTPUTS: [&str; 4] = ["g_n", "g_s", "g_p", "g_r"];
/// The name of DRA's anomaly map output, `(N, S, S)`.
pub const ANOMALY_MAP: &str = "anomaly_map";

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, ModuleT, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use tract_onnx::prelude::{tvec, Framework, InferenceModelExt, IntoTensor};

    use super::*;
    use crate::backbones::Backbone;
    use crate::ops::Kernels;

    /// Sets every BatchNorm's running statistics to values other than (0, 1), so that the
    /// export of eval-mode BatchNorm is checked, not a normalisation that does nothing.
    fn with_running_statistics(varmap: &VarMap) {
        with_running_statistics_scaled(varmap, &[], 1.0)
    }

    /// [`with_running_statistics`] with the running variances of the BatchNorms named
    /// `amplified` times `variance`: below 1 they amplify, so that a ReLU6 after them clips
    /// at 6 (amplifying every layer would make 50 layers chaotic, their rounding flipping
    /// saturated units).
    fn with_running_statistics_scaled(varmap: &VarMap, amplified: &[&str], factor: f64) {
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let n = var.elem_count();
            let values = if name.ends_with("running_mean") {
                crate::testutil::ramp(&[n], 7).affine(0.3, 0.0)
            } else if name.ends_with("running_var") {
                let layer = name.trim_end_matches(".running_var");
                let variance = if amplified.contains(&layer) {
                    factor
                } else {
                    1.0
                };
                crate::testutil::ramp(&[n], 9).affine(0.4 * variance, variance)
            } else {
                continue;
            };
            var.set(&values.unwrap().to_dtype(DType::F32).unwrap())
                .unwrap();
        }
    }

    /// Runs an exported model's bytes in tract, an independent runtime, on `input` and returns
    /// every output's values.
    fn tract_outputs(bytes: &[u8], input: &Tensor) -> Vec<Vec<f32>> {
        let dims = input.dims().to_vec();
        let values = input.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .expect("tract reads the model")
            .into_optimized()
            .expect("tract infers every shape")
            .into_runnable()
            .unwrap();
        let x = tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(dims, values)
            .unwrap()
            .into_tensor();
        plan.run(tvec!(x.into()))
            .unwrap()
            .iter()
            .map(|o| o.to_array_view::<f32>().unwrap().iter().copied().collect())
            .collect()
    }

    /// Fails where `got` differs from `want` by more than 1e-5 of `want`'s range.
    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        let worst = got
            .iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-5 * scale,
            "{what}: largest difference {worst} on values up to {scale}"
        );
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Exports `kind`'s feature extractor alone and checks its 64-px features in tract: the
    /// backbone's layers without the heads' pooling, which would hide their differences.
    fn check_backbone_export(kind: crate::BackboneKind) {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let net = Backbone::new(kind, Kernels::default(), vb.pp("net")).unwrap();
        crate::reset_parameters(&varmap, 3).unwrap();
        // MobileNetV2's first and last BatchNorm amplify, so that their ReLU6 clips at 6.
        let amplified = ["net.features.0.1", "net.features.18.1"];
        with_running_statistics_scaled(&varmap, &amplified, 0.01);
        let mut g = Graph::new();
        let image = [
            Dim::Named("batch"),
            Dim::Fixed(3),
            Dim::Fixed(64),
            Dim::Fixed(64),
        ];
        let x = g.input("image", &image);
        let y = net.export(&mut g, &x).unwrap();
        let features = [
            Dim::Named("batch"),
            Dim::Fixed(kind.out_channels()),
            Dim::Fixed(2),
            Dim::Fixed(2),
        ];
        g.output(&y, "features", &features);
        let bytes = encode(&g.into_model("backbone", &[]));

        let input = crate::testutil::ramp(&[2, 3, 64, 64], 1)
            .to_dtype(DType::F32)
            .unwrap();
        let want = values(&net.forward_t(&input, false).unwrap());
        let top = want.iter().fold(0f32, |m, v| m.max(*v));
        if kind == crate::BackboneKind::MobilenetV2 {
            assert_eq!(top, 6.0, "the last ReLU6 clips");
        }
        let got = tract_outputs(&bytes, &input);
        assert_close(&format!("{kind} features"), &got[0], &want);
    }

    #[test]
    fn resnet18_exports_to_the_features_candle_computes() {
        check_backbone_export(crate::BackboneKind::Resnet18);
    }

    #[test]
    fn mobilenet_v2_exports_to_the_features_candle_computes() {
        check_backbone_export(crate::BackboneKind::MobilenetV2);
    }

    /// Exports `method` on `backbone` (64-px images, two pyramid levels, three references,
    /// seeded weights, non-trivial BatchNorm statistics) and checks that tract computes the
    /// scores, head scores and maps candle does for a batch of two queries.
    fn check_export(method: crate::Method, backbone: crate::BackboneKind) {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let config = crate::ModelConfig {
            n_ref: 3,
            n_scales: 2,
            backbone,
            ..Default::default()
        };
        let detector = crate::Detector::new(method, &config, vb).unwrap();
        crate::reset_parameters(&varmap, 5).unwrap();
        with_running_statistics(&varmap);
        let size = 64;
        let image = |n, seed| {
            crate::testutil::ramp(&[n, 3, size, size], seed)
                .to_dtype(DType::F32)
                .unwrap()
        };
        let (references, queries) = (image(3, 11), image(2, 13));
        let uses_references = detector.uses_references();
        let model = detector
            .to_onnx(
                size,
                uses_references.then_some(&references),
                &[("key".into(), "value".into())],
            )
            .unwrap();
        assert_eq!(model.metadata_props[0].key, "key");
        let got = tract_outputs(&encode(&model), &queries);

        // candle scores the references and the queries in one batch, as dra predict does.
        let batch = if uses_references {
            let images = Tensor::cat(&[&references, &queries], 0).unwrap();
            crate::ImageBatch::with_references(images, 3).unwrap()
        } else {
            crate::ImageBatch::queries(queries.clone()).unwrap()
        };
        let (scores, map) = detector.scores_with_maps(&batch).unwrap();
        let what = format!("{method} on {backbone}");
        assert_close(&format!("{what}: score"), &got[0], &values(&scores.score));
        let mut k = 1;
        for (name, head) in HEAD_OUTPUTS.iter().zip(&scores.heads) {
            if let Some(head) = head {
                assert_close(&format!("{what}: {name}"), &got[k], &values(head));
                k += 1;
            }
        }
        match map {
            Some(map) => {
                let (n, h, w) = map.dims3().unwrap();
                let cells = values(&map);
                let want: Vec<f32> = cells
                    .chunks(h * w)
                    .flat_map(|m| crate::dra::upsample_bilinear(m, (h, w), size))
                    .collect();
                assert_eq!(want.len(), n * size * size);
                assert_close(&format!("{what}: {ANOMALY_MAP}"), &got[k], &want);
                k += 1;
            }
            None => assert!(!uses_references, "DRA exports its map"),
        }
        assert_eq!(got.len(), k, "{what}: one output per score, head and map");
    }

    #[test]
    fn dra_exports_to_the_scores_and_map_candle_computes() {
        check_export(crate::Method::Dra, crate::BackboneKind::Resnet18);
    }

    #[test]
    fn dra_on_mobilenet_v2_exports_to_what_candle_computes() {
        check_export(crate::Method::Dra, crate::BackboneKind::MobilenetV2);
    }

    #[test]
    fn every_baseline_exports_to_the_scores_candle_computes() {
        use crate::Method;
        for method in [
            Method::DevNet,
            Method::DeepSad,
            Method::Minns,
            Method::Flos,
            Method::Saoe,
        ] {
            check_export(method, crate::BackboneKind::Resnet18);
        }
    }

    #[test]
    fn the_checker_refuses_what_onnx_refuses() {
        let mut g = Graph::new();
        let x = g.input("x", &[Dim::Fixed(1)]);
        let y = g.node("Relu", "y", &[&x], &[]);
        g.output(&y, "y", &[Dim::Fixed(1)]);
        let good = g.into_model("m", &[]);
        check(&good).unwrap();

        let mut custom = good.clone();
        custom.graph.as_mut().unwrap().node[0].domain = "com.example".into();
        assert!(check(&custom).unwrap_err().contains("custom domain"));
        let mut unknown = good.clone();
        unknown.graph.as_mut().unwrap().node[0].op_type = "FancyOp".into();
        assert!(check(&unknown).unwrap_err().contains("FancyOp"));
        let mut dangling = good.clone();
        dangling.graph.as_mut().unwrap().node[0].input[0] = "nowhere".into();
        assert!(check(&dangling).unwrap_err().contains("nowhere"));
        let mut twice = good.clone();
        let node = twice.graph.as_ref().unwrap().node[0].clone();
        twice.graph.as_mut().unwrap().node.push(node);
        assert!(check(&twice).unwrap_err().contains("defined before"));
        let mut opset = good;
        opset.opset_import[0].version = 9;
        assert!(check(&opset).unwrap_err().contains("opset"));
    }

    #[test]
    fn a_head_subset_exports_its_heads_only() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let config = crate::ModelConfig {
            n_ref: 2,
            n_scales: 1,
            heads: "seen,residual".parse().unwrap(),
            ..Default::default()
        };
        let detector = crate::Detector::new(crate::Method::Dra, &config, vb).unwrap();
        crate::reset_parameters(&varmap, 5).unwrap();
        let references = crate::testutil::ramp(&[2, 3, 32, 32], 3)
            .to_dtype(DType::F32)
            .unwrap();
        let model = detector.to_onnx(32, Some(&references), &[]).unwrap();
        let outputs: Vec<&str> = model
            .graph
            .as_ref()
            .unwrap()
            .output
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(outputs, ["score", "g_s", "g_r", "anomaly_map"]);
    }
}
