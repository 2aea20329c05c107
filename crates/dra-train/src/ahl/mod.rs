//! Building blocks of AHL (Zhu, Ding, Tian & Pang, "Anomaly Heterogeneity Learning for Open-set
//! Supervised Anomaly Detection", CVPR 2024), which trains DRA's heads over episodes of
//! heterogeneous anomaly distributions. `--method ahl` itself is not there yet: these are the
//! parts it stands on, each tested on its own; `docs/ahl-notes.md` is the plan for the rest
//! (the feature cache, the first-order inner loop, the sequence model that weighs episodes).

pub mod episodes;
pub mod kmeans;
