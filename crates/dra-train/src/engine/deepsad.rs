//! Deep SAD's centre: what the method needs between its initialisation and its first training
//! step (the one baseline that needs anything there).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use dra_data::ImageRef;
use dra_model::baselines::DeepSad;
use dra_model::{Detector, ImageBatch, Method};

use super::scoring::{detached_model, load_normalized_images};
use crate::error::TrainError;
use crate::record::TrainConfig;

/// Deep SAD: fixes the centre c from the initial network (after `--weights`, if any) as the
/// mean embedding of the training normals, through the test transform and without gradients,
/// and stores it in `varmap` (`deepsad.center`), so that it is saved with the model. The
/// forward pass uses BatchNorm's batch statistics on a detached copy (the training model's
/// running statistics are left alone): a network trained from scratch has running statistics
/// (0, 1) that describe nothing, and batch statistics are what the loss trains with.
/// Nothing to do for the other methods.
pub(crate) fn prepare(
    varmap: &VarMap,
    cfg: &TrainConfig,
    normals: &[ImageRef],
    device: &Device,
) -> Result<(), TrainError> {
    if cfg.method != Method::DeepSad {
        return Ok(());
    }
    let Detector::DeepSad(model) = detached_model(varmap, cfg, device)? else {
        unreachable!("a deepsad config builds a Deep SAD model");
    };
    if normals.is_empty() {
        return Err(TrainError::InvalidOption {
            flag: "--dataset",
            message: "Deep SAD needs training normals for its centre".into(),
        });
    }
    // Even chunks of at most a training batch: no tiny last batch for the batch statistics.
    let max = cfg.batch_size.max(2);
    let n_chunks = normals.len().div_ceil(max);
    let chunk = normals.len().div_ceil(n_chunks);
    let s = cfg.image_size as usize;
    let mut sum = vec![0f64; DeepSad::REP_DIM];
    for images in normals.chunks(chunk) {
        let batch = ImageBatch::from_values(
            load_normalized_images(images, cfg.image_size)?,
            0,
            s,
            device,
        )?;
        let embeddings = model.embed(batch.images(), true)?.to_dtype(DType::F64)?;
        for row in embeddings.to_vec2::<f64>()? {
            for (acc, v) in sum.iter_mut().zip(row) {
                *acc += v;
            }
        }
    }
    let mean: Vec<f32> = sum
        .iter()
        .map(|v| (v / normals.len() as f64) as f32)
        .collect();
    let center = DeepSad::center_from_mean(&mean);
    let data = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned");
    let var = data
        .get(DeepSad::CENTER)
        .expect("a Deep SAD model has a centre");
    var.set(&Tensor::from_vec(center, DeepSad::REP_DIM, device)?)?;
    Ok(())
}
