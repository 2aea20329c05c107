//! Seeded k-means (k-means++ seeding, Lloyd iterations, the best of several restarts): AHL
//! groups the training normals by their backbone features before it builds its episodes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The result of clustering `n` points.
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    /// The cluster of each point, `0..k`.
    pub labels: Vec<usize>,
    /// The sum of squared distances of the points to their cluster's centre.
    pub inertia: f64,
}

impl Clustering {
    /// The members of each cluster, in point order (a cluster may be empty when points repeat).
    pub fn members(&self, k: usize) -> Vec<Vec<usize>> {
        let mut members = vec![Vec::new(); k];
        for (i, &label) in self.labels.iter().enumerate() {
            members[label].push(i);
        }
        members
    }
}

/// k-means of `points` (each of the same length) into `k` clusters: k-means++ seeding from
/// `seed`, then Lloyd's iterations until no point changes cluster (at most `max_iter`), the
/// best of `restarts` runs by inertia. The same inputs give the same clusters. Needs
/// `1 ≤ k ≤ points.len()`.
pub fn kmeans(
    points: &[Vec<f32>],
    k: usize,
    restarts: usize,
    max_iter: usize,
    seed: u64,
) -> Clustering {
    assert!(
        k >= 1 && k <= points.len(),
        "k-means needs 1 ≤ k ≤ the number of points"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut best: Option<Clustering> = None;
    for _ in 0..restarts.max(1) {
        let run = lloyd(points, seed_centres(points, k, &mut rng), max_iter);
        if best.as_ref().is_none_or(|b| run.inertia < b.inertia) {
            best = Some(run);
        }
    }
    best.expect("at least one restart")
}

/// k-means++: the first centre uniformly, each next one with probability proportional to the
/// squared distance to the nearest centre chosen so far.
fn seed_centres(points: &[Vec<f32>], k: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
    let mut centres: Vec<Vec<f64>> = Vec::with_capacity(k);
    let as_f64 = |p: &[f32]| p.iter().map(|v| f64::from(*v)).collect::<Vec<f64>>();
    centres.push(as_f64(&points[rng.random_range(0..points.len())]));
    let mut nearest: Vec<f64> = points
        .iter()
        .map(|p| distance2_to(p, &centres[0]))
        .collect();
    while centres.len() < k {
        let total: f64 = nearest.iter().sum();
        let next = if total > 0.0 {
            let mut target = rng.random_range(0.0..total);
            nearest
                .iter()
                .position(|d| {
                    target -= d;
                    target < 0.0
                })
                .unwrap_or(points.len() - 1)
        } else {
            // Every point sits on a centre: any point will do.
            rng.random_range(0..points.len())
        };
        centres.push(as_f64(&points[next]));
        let centre = centres.last().expect("just pushed");
        for (d, p) in nearest.iter_mut().zip(points) {
            *d = d.min(distance2_to(p, centre));
        }
    }
    centres
}

fn distance2_to(p: &[f32], c: &[f64]) -> f64 {
    p.iter()
        .zip(c)
        .map(|(x, y)| {
            let d = f64::from(*x) - y;
            d * d
        })
        .sum()
}

fn lloyd(points: &[Vec<f32>], mut centres: Vec<Vec<f64>>, max_iter: usize) -> Clustering {
    let k = centres.len();
    let dim = points[0].len();
    let assign = |centres: &[Vec<f64>]| -> Vec<usize> {
        points
            .iter()
            .map(|p| {
                (0..k)
                    .min_by(|&a, &b| {
                        distance2_to(p, &centres[a]).total_cmp(&distance2_to(p, &centres[b]))
                    })
                    .expect("k ≥ 1")
            })
            .collect()
    };
    let mut labels = assign(&centres);
    for _ in 0..max_iter {
        let mut sums = vec![vec![0f64; dim]; k];
        let mut counts = vec![0usize; k];
        for (p, &l) in points.iter().zip(&labels) {
            counts[l] += 1;
            for (s, v) in sums[l].iter_mut().zip(p) {
                *s += f64::from(*v);
            }
        }
        for c in 0..k {
            // An emptied cluster keeps its centre.
            if counts[c] > 0 {
                centres[c] = sums[c].iter().map(|s| s / counts[c] as f64).collect();
            }
        }
        let next = assign(&centres);
        if next == labels {
            break;
        }
        labels = next;
    }
    let inertia = points
        .iter()
        .zip(&labels)
        .map(|(p, &l)| distance2_to(p, &centres[l]))
        .sum();
    Clustering { labels, inertia }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three well-separated blobs of 5, 4 and 3 points in 2-D, in an interleaved order.
    fn blobs() -> (Vec<Vec<f32>>, Vec<usize>) {
        let centres = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)];
        let sizes = [5, 4, 3];
        let mut points = Vec::new();
        let mut truth = Vec::new();
        for i in 0..5 {
            for (c, &(x, y)) in centres.iter().enumerate() {
                if i < sizes[c] {
                    let jitter = 0.1 * i as f32;
                    points.push(vec![x + jitter, y - jitter]);
                    truth.push(c);
                }
            }
        }
        (points, truth)
    }

    #[test]
    fn finds_separated_blobs_whatever_the_seed() {
        let (points, truth) = blobs();
        for seed in 0..10 {
            let c = kmeans(&points, 3, 3, 100, seed);
            // The same partition as the truth, up to the clusters' names.
            for i in 0..points.len() {
                for j in 0..points.len() {
                    assert_eq!(
                        c.labels[i] == c.labels[j],
                        truth[i] == truth[j],
                        "seed {seed}: points {i} and {j}"
                    );
                }
            }
            let mut sizes: Vec<usize> = c.members(3).iter().map(Vec::len).collect();
            sizes.sort_unstable();
            assert_eq!(sizes, [3, 4, 5]);
        }
    }

    #[test]
    fn is_deterministic_and_handles_repeated_points() {
        let (points, _) = blobs();
        assert_eq!(kmeans(&points, 3, 2, 50, 7), kmeans(&points, 3, 2, 50, 7));
        // Identical points: fewer distinct points than clusters must still terminate.
        let same = vec![vec![1.0f32, 1.0]; 4];
        let c = kmeans(&same, 3, 2, 50, 1);
        assert_eq!(c.labels.len(), 4);
        assert_eq!(c.inertia, 0.0);
        // By hand: 1-D points {0, 1, 10, 11} in two clusters, centres 0.5 and 10.5.
        let line: Vec<Vec<f32>> = [0.0, 1.0, 10.0, 11.0].iter().map(|v| vec![*v]).collect();
        let c = kmeans(&line, 2, 5, 50, 3);
        assert_eq!(c.inertia, 1.0);
        assert_eq!(c.labels[0], c.labels[1]);
        assert_ne!(c.labels[1], c.labels[2]);
    }
}
