//! Export to ONNX: the protobuf messages of a model file ([`proto`], written out, so that a
//! build needs nothing but cargo) and the graph the layers write themselves into ([`Graph`]):
//! each layer of the scoring path has an `export` beside its `forward` that adds the same
//! computation as standard ONNX operators of one opset ([`OPSET`]).
//!
//! Exported so far ([`crate::Dra::export`]): DRA on the ResNet-18 backbone in eval mode, the
//! image pyramid (nearest-neighbour rows and columns as `Gather`), the four heads (the
//! residual head against the references' mean feature map per level, baked in as a constant),
//! each head's score, the anomaly score of the chosen heads, and the anomaly map at the
//! feature map's size; checked against candle's scoring by tract, an independent runtime.
//! Still to come (issue 31): MobileNetV2, the map upsampled to the image, the baselines, the
//! file's metadata and `dra export`.

mod graph;
pub mod proto;

pub use graph::{encode, Attr, Dim, Graph, OPSET};

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, ModuleT, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use tract_onnx::prelude::{tvec, Framework, InferenceModelExt, IntoTensor};

    use super::*;
    use crate::backbones::ResNet18;
    use crate::ops::Kernels;

    /// Sets every BatchNorm's running statistics to values other than (0, 1), so that the
    /// export of eval-mode BatchNorm is checked, not a normalisation that does nothing.
    fn with_running_statistics(varmap: &VarMap) {
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let n = var.elem_count();
            let values = if name.ends_with("running_mean") {
                crate::testutil::ramp(&[n], 7).affine(0.3, 0.0)
            } else if name.ends_with("running_var") {
                crate::testutil::ramp(&[n], 9).affine(0.4, 1.0)
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

    #[test]
    fn resnet18_exports_to_the_features_candle_computes() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let net = ResNet18::new(Kernels::default(), vb.pp("net")).unwrap();
        crate::reset_parameters(&varmap, 3).unwrap();
        with_running_statistics(&varmap);
        let mut g = Graph::new();
        let image = [
            Dim::Named("batch"),
            Dim::Fixed(3),
            Dim::Fixed(64),
            Dim::Fixed(64),
        ];
        let x = g.input("image", &image);
        let y = net.export(&mut g, "net", &x).unwrap();
        let features = [
            Dim::Named("batch"),
            Dim::Fixed(512),
            Dim::Fixed(2),
            Dim::Fixed(2),
        ];
        g.output(&y, "features", &features);
        let bytes = encode(&g.into_model("resnet18", &[]));

        let input = crate::testutil::ramp(&[2, 3, 64, 64], 1)
            .to_dtype(DType::F32)
            .unwrap();
        let want = values(&net.forward_t(&input, false).unwrap());
        assert_close("features", &tract_outputs(&bytes, &input)[0], &want);
    }

    #[test]
    fn dra_exports_to_the_scores_and_map_candle_computes() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let config = crate::ModelConfig {
            n_ref: 3,
            n_scales: 2,
            ..Default::default()
        };
        let dra = crate::Dra::new(config, vb).unwrap();
        crate::reset_parameters(&varmap, 5).unwrap();
        with_running_statistics(&varmap);
        let size = 64;
        let image = |n, seed| {
            crate::testutil::ramp(&[n, 3, size, size], seed)
                .to_dtype(DType::F32)
                .unwrap()
        };
        let (references, queries) = (image(3, 11), image(2, 13));

        let mut g = Graph::new();
        let dims = [
            Dim::Named("batch"),
            Dim::Fixed(3),
            Dim::Fixed(size),
            Dim::Fixed(size),
        ];
        let x = g.input("image", &dims);
        let out = dra.export(&mut g, &x, &references).unwrap();
        let batch = [Dim::Named("batch")];
        g.output(&out.score, "score", &batch);
        for (value, name) in out.heads.iter().zip(["g_n", "g_s", "g_p", "g_r"]) {
            g.output(value, name, &batch);
        }
        let map = [Dim::Named("batch"), Dim::Fixed(2), Dim::Fixed(2)];
        g.output(&out.map, "anomaly_map", &map);
        let bytes = encode(&g.into_model("dra", &[]));
        let got = tract_outputs(&bytes, &queries);

        // candle scores the references and the queries in one batch, as dra predict does.
        let batch = Tensor::cat(&[&references, &queries], 0).unwrap();
        let (scores, map) = dra.scores_and_maps(&batch).unwrap();
        assert_close("score", &got[0], &values(&scores.anomaly_score().unwrap()));
        let heads = [
            &scores.normal,
            &scores.seen,
            &scores.pseudo,
            &scores.residual,
        ];
        for (k, (name, want)) in ["g_n", "g_s", "g_p", "g_r"].iter().zip(heads).enumerate() {
            assert_close(name, &got[1 + k], &values(want));
        }
        assert_close("anomaly_map", &got[5], &values(&map));
    }
}
