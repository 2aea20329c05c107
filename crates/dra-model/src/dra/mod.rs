//! DRA (Ding, Pang & Shen, CVPR 2022): the model ([`Dra`]: a backbone and four heads on a
//! two-level image pyramid, its constants in [`ModelConfig`](crate::ModelConfig)), the heads
//! (`modeling/net.py` of the official code: one struct per kind of head) and the training loss.

mod heads;
mod loss;
mod model;

pub use heads::{top_k_mean, CompositeHead, HolisticHead, PlainHead};
pub use loss::{DraLoss, LossKind, LossParts, Prior};
pub use model::{upsample_bilinear, Dra, DraHeads, ExportedScores, HeadScores};

pub(crate) use heads::{export_global_pool, export_top_k_mean, global_pool};
pub(crate) use model::{
    downsample_nearest, export_downsample_nearest, export_pyramid_mean, feature_cells, pyramid_mean,
};
