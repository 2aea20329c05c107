//! What a detector trains and scores on: typed, instead of a tensor whose first rows are
//! understood to be references and a slice of 0/1/2 understood to be labels.

use candle_core::{bail, Device, Result, Tensor};

/// What a training image is to the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A normal image (label 0 in the official code).
    Normal,
    /// A labelled anomaly, of a seen class (label 1).
    Anomaly,
    /// A pseudo anomaly made from a normal image by CutMix or outlier exposure (label 2).
    PseudoAnomaly,
}

impl Target {
    /// The official code's label: 0 normal, 1 anomaly, 2 pseudo anomaly.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Normal => 0,
            Self::Anomaly => 1,
            Self::PseudoAnomaly => 2,
        }
    }
}

/// Images for a detector: DRA's reference normals, then the images to train on or score (the
/// queries), in one NCHW tensor. The official model concatenates references and queries before
/// the backbone; holding them in one tensor from the start spares that copy, and this type
/// keeps the count, so that no caller slices rows by hand.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    images: Tensor,
    n_ref: usize,
}

impl ImageBatch {
    /// A batch from normalised pixel values, references first: `(n_ref + n) × 3 ×
    /// image_size²` values for `n` queries.
    pub fn from_values(
        values: Vec<f32>,
        n_ref: usize,
        image_size: usize,
        device: &Device,
    ) -> Result<Self> {
        let per_image = 3 * image_size * image_size;
        if per_image == 0
            || !values.len().is_multiple_of(per_image)
            || values.len() / per_image <= n_ref
        {
            bail!(
                "a batch of {} values is not {n_ref} reference(s) and at least one query of \
                 3 × {image_size} × {image_size}",
                values.len()
            );
        }
        let n = values.len() / per_image;
        let images = Tensor::from_vec(values, (n, 3, image_size, image_size), device)?;
        Ok(Self { images, n_ref })
    }

    /// Queries alone (for the methods without references): `(n, 3, H, W)`.
    pub fn queries(images: Tensor) -> Result<Self> {
        Self::with_references(images, 0)
    }

    /// References and queries already in one `(n_ref + n, 3, H, W)` tensor, references first.
    pub fn with_references(images: Tensor, n_ref: usize) -> Result<Self> {
        let (n, c, _, _) = images.dims4()?;
        if c != 3 || n <= n_ref {
            bail!(
                "a batch of shape {:?} is not {n_ref} reference(s) and at least one query of \
                 3 channels",
                images.dims()
            );
        }
        Ok(Self { images, n_ref })
    }

    /// Number of reference images at the start.
    pub fn n_ref(&self) -> usize {
        self.n_ref
    }

    /// Number of query images after the references.
    pub fn n_queries(&self) -> usize {
        self.images.dims()[0] - self.n_ref
    }

    /// The query images, `(n, 3, H, W)`.
    pub fn query_images(&self) -> Result<Tensor> {
        self.images.narrow(0, self.n_ref, self.n_queries())
    }

    /// Every image, references first, `(n_ref + n, 3, H, W)`: what the models' `forward_t`
    /// take.
    pub fn images(&self) -> &Tensor {
        &self.images
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_knows_its_references_and_queries() -> Result<()> {
        let values: Vec<f32> = (0..5 * 3 * 2 * 2).map(|v| v as f32).collect();
        let batch = ImageBatch::from_values(values, 2, 2, &Device::Cpu)?;
        assert_eq!((batch.n_ref(), batch.n_queries()), (2, 3));
        let q = batch.query_images()?;
        assert_eq!(q.dims(), [3, 3, 2, 2]);
        assert_eq!(q.flatten_all()?.to_vec1::<f32>()?[0], 24.0);
        assert!(ImageBatch::from_values(vec![0.0; 24], 2, 2, &Device::Cpu).is_err());
        assert!(ImageBatch::from_values(vec![0.0; 25], 0, 2, &Device::Cpu).is_err());
        assert_eq!(
            [Target::Normal, Target::Anomaly, Target::PseudoAnomaly].map(Target::as_u8),
            [0, 1, 2]
        );
        Ok(())
    }
}
