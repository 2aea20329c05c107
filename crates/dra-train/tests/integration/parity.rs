//! Parity with the official PyTorch model: the fixture `fixtures/golden_dra.safetensors` was
//! computed by `tools/golden/make_golden.py` (torch, run by hand). Weights and inputs are not
//! stored: both sides derive them from tensor names with the same integer hash.
//!
//! The models run on the CPU, or on a GPU with `DRA_TEST_DEVICE=cuda` (see `common::device`):
//! on a GPU the layers run candle's own ops, so the same fixtures check the GPU path.
//!
//! Error measure: for every compared tensor, max |ours − torch| / max |torch| (relative to the
//! tensor's scale). The model as it runs (float32) is compared on eval-mode scores within
//! 1e-4. Everything else (training forward, losses, BatchNorm statistics, gradients, the Adam
//! update) is compared in float64 on both sides within 1e-9: in float32 the backward through
//! BatchNorm over so few values is ill-conditioned enough that PyTorch's own float32 gradients
//! differ from its float64 ones by up to ~1e-2 on this fixture, which would hide real errors.

use std::collections::HashMap;

use crate::common::device;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dra_model::{Dra, DraLoss, HeadScores, LossKind, ModelConfig, Prior};
use dra_train::engine::{trainable, Adam, AdamConfig};

const TOL_F32: f64 = 1e-4;
const TOL_F64: f64 = 1e-9;
const LABELS: [u8; 4] = [0, 1, 2, 0];
const N_REF: usize = 2;
const SIZE: usize = 64;

fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)
    })
}

/// The generator of `make_golden.py`: splitmix64(fnv1a(name) + i) >> 40, over 2^24.
fn golden_values(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let key = fnv1a(name);
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let fan_in: usize = shape.iter().skip(1).product();
    (0..n as u64)
        .map(|i| {
            let x = key.wrapping_add(i).wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f64 / 16_777_216.0;
            let v = match leaf {
                _ if name == "input" || name == "mbv2.input" => (u * 2.0 - 1.0) * 3f64.sqrt(),
                "running_mean" => (u * 2.0 - 1.0) * 0.1,
                "running_var" => 1.0 + 0.5 * u,
                "weight" if shape.len() == 1 => 1.0 + (u * 2.0 - 1.0) * 0.1,
                "bias" => (u * 2.0 - 1.0) * 0.1,
                _ => (u * 2.0 - 1.0) * (3.0 / fan_in as f64).sqrt(),
            };
            v as f32
        })
        .collect()
}

struct Golden {
    tensors: HashMap<String, Tensor>,
}

impl Golden {
    fn load() -> Self {
        // At run time first: `gpu-check --bundle` runs this binary from another checkout.
        let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        );
        let path = crate_dir.join("tests/fixtures/golden_dra.safetensors");
        Self {
            tensors: candle_core::safetensors::load(&path, &Device::Cpu).expect("golden fixture"),
        }
    }
    fn get(&self, name: &str) -> Vec<f64> {
        let t = self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture lacks {name}"));
        vec1(t)
    }
}

/// Max error relative to the reference tensor's largest magnitude.
fn check_tol(what: &str, ours: &[f64], torch: &[f64], tol: f64) -> f64 {
    assert_eq!(ours.len(), torch.len(), "{what}: length");
    let scale = torch.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let err = ours
        .iter()
        .zip(torch)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    let rel = err / scale;
    assert!(rel <= tol, "{what}: relative error {rel:.2e} > {tol:.0e}");
    eprintln!("{what}: {rel:.1e}");
    rel
}

fn check(what: &str, ours: &[f64], torch: &[f64]) -> f64 {
    check_tol(what, ours, torch, TOL_F64)
}

fn vec1(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn pick(t: &Tensor, rows: &[usize]) -> Vec<f64> {
    let v = vec1(t);
    rows.iter().map(|&i| v[i]).collect()
}

fn model(dtype: DType) -> Result<(VarMap, Dra)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &device());
    let config = ModelConfig {
        n_ref: N_REF,
        ..Default::default()
    };
    let dra = Dra::new(config, vb)?;
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let values = golden_values(name, var.dims());
        var.set(&Tensor::from_vec(values, var.dims(), &device())?.to_dtype(dtype)?)?;
    }
    Ok((varmap, dra))
}

fn input(golden: &Golden, dtype: DType) -> Result<Tensor> {
    let shape = [N_REF + LABELS.len(), 3, SIZE, SIZE];
    let x = golden_values("input", &shape);
    let head: Vec<f64> = x[..16].iter().map(|v| *v as f64).collect();
    assert_eq!(
        head,
        golden.get("input_check"),
        "the hash generators differ"
    );
    Tensor::from_vec(x, &shape, &device())?.to_dtype(dtype)
}

fn head(scores: &HeadScores, i: usize) -> &Tensor {
    [
        &scores.normal,
        &scores.seen,
        &scores.pseudo,
        &scores.residual,
    ][i]
}

const HEADS: [&str; 4] = ["normal", "seen", "pseudo", "residual"];

#[test]
fn eval_mode_scores_match_pytorch_in_f32() -> Result<()> {
    eval_mode(DType::F32, "eval32", TOL_F32)
}

#[test]
fn eval_mode_scores_match_pytorch_in_f64() -> Result<()> {
    eval_mode(DType::F64, "eval", TOL_F64)
}

fn eval_mode(dtype: DType, prefix: &str, tol: f64) -> Result<()> {
    let golden = Golden::load();
    let (varmap, _) = model(dtype)?;
    let tensors = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect();
    let eval = Dra::new(
        ModelConfig {
            n_ref: N_REF,
            ..Default::default()
        },
        VarBuilder::from_tensors(tensors, dtype, &device()),
    )?;
    let x = input(&golden, dtype)?;
    let scales = eval.forward_scales(&x, false)?;
    for (s, scores) in scales.iter().enumerate() {
        for (i, name) in HEADS.iter().enumerate() {
            let what = format!("{prefix} s{s} {name}");
            check_tol(
                &what,
                &vec1(head(scores, i)),
                &golden.get(&format!("{prefix}.s{s}.{name}")),
                tol,
            );
        }
    }
    let avg = HeadScores::average(&scales)?;
    for (i, name) in HEADS.iter().enumerate() {
        let what = format!("{prefix} {name}");
        check_tol(
            &what,
            &vec1(head(&avg, i)),
            &golden.get(&format!("{prefix}.{name}")),
            tol,
        );
    }
    Ok(())
}

#[test]
fn training_step_matches_pytorch() -> Result<()> {
    let golden = Golden::load();
    let (varmap, dra) = model(DType::F64)?;
    let x = input(&golden, DType::F64)?;

    // Forward in train mode: per scale and averaged, with the official row routing.
    let scales = dra.forward_scales(&x, true)?;
    for (s, scores) in scales.iter().enumerate() {
        for (i, name) in HEADS.iter().enumerate() {
            check(
                &format!("train s{s} {name}"),
                &vec1(head(scores, i)),
                &golden.get(&format!("train.s{s}.{name}")),
            );
        }
    }
    let scores = HeadScores::average(&scales)?;
    let routes: [&[usize]; 4] = [&[0, 1, 2, 3], &[0, 1, 3], &[0, 2, 3], &[0, 1, 2, 3]];
    for (i, name) in HEADS.iter().enumerate() {
        check(
            &format!("train {name}"),
            &pick(head(&scores, i), routes[i]),
            &golden.get(&format!("train.{name}")),
        );
    }

    // Loss with the priors PyTorch drew.
    let p = golden.tensors["priors"].to_vec2::<f64>()?;
    let priors = [0, 1, 2, 3].map(|i| Prior {
        mean: p[i][0],
        std: p[i][1],
    });
    let loss = DraLoss::new(LossKind::Deviation).compute_with_priors(&scores, &LABELS, priors)?;
    for (i, name) in HEADS.iter().enumerate() {
        check(
            &format!("loss {name}"),
            &vec1(&loss.heads[i]),
            &golden.get(&format!("loss.{name}")),
        );
    }
    check("loss total", &vec1(&loss.total), &golden.get("loss.total"));

    // BatchNorm running statistics after the two backbone calls.
    let data = varmap.data().lock().unwrap().clone();
    for name in [
        "feature_extractor.net.bn1.running_mean",
        "feature_extractor.net.bn1.running_var",
        "composite_head.conv.1.running_mean",
        "composite_head.conv.1.running_var",
    ] {
        check(
            name,
            &vec1(data[name].as_tensor()),
            &golden.get(&format!("running.{name}")),
        );
    }

    // Gradients (PyTorch's are stored after clipping to norm 1).
    let grads = loss.total.backward()?;
    let params = trainable(&varmap);
    let norm = params
        .iter()
        .filter_map(|v| grads.get(v.as_tensor()))
        .map(|g| {
            g.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        })
        .sum::<f64>()
        .sqrt();
    let torch_norm = golden.get("grad_norm")[0];
    check("grad norm", &[norm], &[torch_norm]);
    let clip = (1.0 / (norm + 1e-6)).min(1.0);
    let stride = 1009;
    let sampled = |v: Vec<f64>| -> Vec<f64> {
        if v.len() > 20_000 {
            v.into_iter().step_by(stride).collect()
        } else {
            v
        }
    };
    let selection: Vec<String> = golden
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix("grad.").map(str::to_string))
        .collect();
    assert!(
        selection.len() >= 10,
        "fixture holds {} gradients",
        selection.len()
    );
    let before: HashMap<&str, Vec<f64>> = selection
        .iter()
        .map(|n| (n.as_str(), sampled(vec1(data[n].as_tensor()))))
        .collect();
    for name in &selection {
        let g = grads.get(data[name].as_tensor()).expect("gradient exists");
        let ours: Vec<f64> = sampled(vec1(g)).into_iter().map(|v| v * clip).collect();
        check(
            &format!("grad {name}"),
            &ours,
            &golden.get(&format!("grad.{name}")),
        );
    }

    // One Adam step (coupled L2 1e-5, clip 1.0, lr 2e-4): compare the update itself.
    let config = AdamConfig {
        weight_decay: 1e-5,
        clip_norm: Some(1.0),
        ..Default::default()
    };
    Adam::new(params, config)?.step(&grads, 2e-4)?;
    for name in &selection {
        let after = sampled(vec1(data[name].as_tensor()));
        let torch_after = golden.get(&format!("after.{name}"));
        let ours: Vec<f64> = after
            .iter()
            .zip(&before[name.as_str()])
            .map(|(a, b)| a - b)
            .collect();
        let theirs: Vec<f64> = torch_after
            .iter()
            .zip(&before[name.as_str()])
            .map(|(a, b)| a - b)
            .collect();
        check(&format!("Adam update {name}"), &ours, &theirs);
    }
    Ok(())
}

#[test]
fn mobilenet_v2_features_match_torchvision() -> Result<()> {
    use candle_core::ModuleT;
    let golden = Golden::load();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &device());
    let net = dra_model::backbones::MobileNetV2::new(
        dra_model::Kernels::default(),
        vb.pp("feature_extractor").pp("net"),
    )?;
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let values = golden_values(name, var.dims());
        var.set(&Tensor::from_vec(values, var.dims(), &device())?.to_dtype(DType::F64)?)?;
    }
    let shape = [3, 3, SIZE, SIZE];
    let x = Tensor::from_vec(golden_values("mbv2.input", &shape), &shape, &device())?
        .to_dtype(DType::F64)?;
    check(
        "mobilenet_v2 eval",
        &vec1(&net.forward_t(&x, false)?),
        &golden.get("mbv2.eval"),
    );
    check(
        "mobilenet_v2 train",
        &vec1(&net.forward_t(&x, true)?),
        &golden.get("mbv2.train"),
    );
    Ok(())
}
