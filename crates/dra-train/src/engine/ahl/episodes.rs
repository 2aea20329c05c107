//! AHL's heterogeneous anomaly distributions: episodes of support and query sets, each pairing
//! two clusters of the training normals with a share of the labelled anomalies and a
//! pseudo-anomaly generator (docs/ahl-notes.md §2).

use rand::seq::index::sample;
use rand::Rng;

use crate::record::{Draws, Members};

/// One episode: the normals and labelled anomalies (indices into the training lists) of its
/// support and query sets, and the generator (an index into the caller's list) of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    /// Normals the inner loop adapts on.
    pub support_normals: Vec<usize>,
    /// Labelled anomalies the inner loop adapts on.
    pub support_anomalies: Vec<usize>,
    /// Pseudo-anomaly generator of the support set.
    pub support_generator: usize,
    /// Normals the adapted heads are evaluated on.
    pub query_normals: Vec<usize>,
    /// Labelled anomalies the adapted heads are evaluated on: two of the support's and the
    /// ones the support did not see.
    pub query_anomalies: Vec<usize>,
    /// Pseudo-anomaly generator of the query set.
    pub query_generator: usize,
}

/// The clusters AHL keeps: those with more than two members (`mvtecad.py:64`), in order.
pub fn usable_clusters(clusters: Vec<Vec<usize>>) -> Vec<Vec<usize>> {
    clusters.into_iter().filter(|c| c.len() > 2).collect()
}

/// One episode per ordered pair of clusters (support, query), pairs in the official order
/// (0,1), (0,2), (1,2), … then the same reversed: m(m − 1) episodes for m clusters.
/// `n_anomalies` labelled anomalies and `n_generators` generators are shared out as the paper
/// (or the code, with `draws`) does. Needs at least two clusters and one generator.
pub fn episodes<R: Rng>(
    clusters: &[Vec<usize>],
    members: Members,
    n_anomalies: usize,
    n_generators: usize,
    draws: Draws,
    rng: &mut R,
) -> Vec<Episode> {
    assert!(clusters.len() >= 2, "episodes pair at least two clusters");
    assert!(
        n_generators >= 1,
        "episodes need a pseudo-anomaly generator"
    );
    let normals = |c: &Vec<usize>| match members {
        Members::KMeans => c.clone(),
        Members::Prefix => (0..c.len()).collect(),
    };
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for i in 0..clusters.len() {
        for j in i + 1..clusters.len() {
            pairs.push((i, j));
        }
    }
    let reversed: Vec<(usize, usize)> = pairs.iter().map(|&(i, j)| (j, i)).collect();
    pairs.extend(reversed);
    pairs
        .into_iter()
        .map(|(s, q)| {
            let (support_anomalies, query_anomalies) = match draws {
                Draws::Paper => split_anomalies(n_anomalies, rng),
                Draws::Official => {
                    let (support, _) = split_anomalies(n_anomalies, rng);
                    let (_, query) = split_anomalies(n_anomalies, rng);
                    (support, query)
                }
            };
            let support_generator = rng.random_range(0..n_generators);
            let query_generator = match draws {
                Draws::Official => support_generator,
                // Another generator when there is one.
                Draws::Paper if n_generators > 1 => {
                    let k = rng.random_range(0..n_generators - 1);
                    if k >= support_generator {
                        k + 1
                    } else {
                        k
                    }
                }
                Draws::Paper => support_generator,
            };
            Episode {
                support_normals: normals(&clusters[s]),
                support_anomalies,
                support_generator,
                query_normals: normals(&clusters[q]),
                query_anomalies,
                query_generator,
            }
        })
        .collect()
}

/// The seen anomalies of an episode: half of them (⌊M/2⌋, drawn) for the support, and for the
/// query two of those and every one the support did not get; with one anomaly, it is both's.
fn split_anomalies<R: Rng>(n: usize, rng: &mut R) -> (Vec<usize>, Vec<usize>) {
    if n <= 1 {
        return ((0..n).collect(), (0..n).collect());
    }
    let mut support: Vec<usize> = sample(rng, n, n / 2).into_vec();
    support.sort_unstable();
    let mut query: Vec<usize> = sample(rng, support.len(), 2.min(support.len()))
        .into_iter()
        .map(|i| support[i])
        .collect();
    query.extend((0..n).filter(|i| !support.contains(i)));
    query.sort_unstable();
    (support, query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn clusters() -> Vec<Vec<usize>> {
        vec![vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8, 10, 11]]
    }

    #[test]
    fn every_ordered_pair_of_clusters_is_an_episode() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let e = episodes(&clusters(), Members::KMeans, 10, 3, Draws::Paper, &mut rng);
        assert_eq!(e.len(), 6);
        let c = clusters();
        let pairs: Vec<(Vec<usize>, Vec<usize>)> = e
            .iter()
            .map(|e| (e.support_normals.clone(), e.query_normals.clone()))
            .collect();
        assert_eq!(
            pairs,
            [
                (c[0].clone(), c[1].clone()),
                (c[0].clone(), c[2].clone()),
                (c[1].clone(), c[2].clone()),
                (c[1].clone(), c[0].clone()),
                (c[2].clone(), c[0].clone()),
                (c[2].clone(), c[1].clone()),
            ]
        );
        // The official code's clusters are prefixes of the listing: only the sizes matter.
        let prefix = episodes(&clusters(), Members::Prefix, 10, 3, Draws::Paper, &mut rng);
        assert_eq!(prefix[0].support_normals, [0, 1, 2, 3]);
        assert_eq!(prefix[1].query_normals, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn anomalies_split_five_to_seven_of_ten_and_generators_differ() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for e in episodes(&clusters(), Members::KMeans, 10, 3, Draws::Paper, &mut rng) {
            assert_eq!(e.support_anomalies.len(), 5);
            assert_eq!(e.query_anomalies.len(), 7);
            // Two of the support's, and the five it did not see.
            let shared = e
                .query_anomalies
                .iter()
                .filter(|a| e.support_anomalies.contains(a))
                .count();
            assert_eq!(shared, 2);
            assert!(e.support_generator < 3 && e.query_generator < 3);
            assert_ne!(e.support_generator, e.query_generator);
        }
        for e in episodes(
            &clusters(),
            Members::KMeans,
            10,
            3,
            Draws::Official,
            &mut rng,
        ) {
            assert_eq!((e.support_anomalies.len(), e.query_anomalies.len()), (5, 7));
            assert_eq!(e.support_generator, e.query_generator);
        }
        // One labelled anomaly: both sets get it.
        let one = episodes(&clusters(), Members::KMeans, 1, 1, Draws::Paper, &mut rng);
        assert!(one
            .iter()
            .all(|e| e.support_anomalies == [0] && e.query_anomalies == [0]));
    }

    #[test]
    fn small_clusters_are_dropped() {
        let kept = usable_clusters(vec![vec![0, 1, 2], vec![3, 4], vec![5, 6, 7, 8]]);
        assert_eq!(kept, [vec![0, 1, 2], vec![5, 6, 7, 8]]);
    }
}
