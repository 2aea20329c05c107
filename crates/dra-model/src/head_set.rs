//! Which of DRA's heads a model trains and scores with: all four (DRA), or a subset as the
//! paper's ablation (Table 3) compares them.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// A subset of DRA's heads, in the order normal (g_n), seen (g_s), pseudo (g_p), residual (g_r).
/// A head outside the set is still built (the tensor names stay the official ones) but adds
/// nothing to the loss, so it receives no gradient, and nothing to the score or the maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeadSet([bool; 4]);

/// The heads' names, in [`HeadSet`] order, as `--heads` takes them.
pub const HEAD_NAMES: [&str; 4] = ["normal", "seen", "pseudo", "residual"];

impl HeadSet {
    /// All four heads: DRA itself.
    pub const ALL: Self = Self([true; 4]);

    /// The paper's Table 3 variants, by its names: DRA1A (g_s), DRA2A (+ g_p), DRA3Ar (+ g_r),
    /// DRA3An (+ g_n) and the full DRA.
    pub const PAPER_VARIANTS: [(&'static str, Self); 5] = [
        ("DRA1A", Self([false, true, false, false])),
        ("DRA2A", Self([false, true, true, false])),
        ("DRA3Ar", Self([false, true, true, true])),
        ("DRA3An", Self([true, true, true, false])),
        ("DRA", Self::ALL),
    ];

    /// Whether the head at `index` (0 normal, 1 seen, 2 pseudo, 3 residual) is in the set.
    pub fn has(self, index: usize) -> bool {
        self.0[index]
    }

    /// The sum of the seen, pseudo and residual heads' tensors that are in the set, added in
    /// that order (so that with all heads it is `(seen + pseudo) + residual`, bit for bit).
    pub fn sum_abnormal(self, [seen, pseudo, residual]: [&Tensor; 3]) -> Result<Tensor> {
        let mut sum: Option<Tensor> = None;
        for (index, t) in [(1, seen), (2, pseudo), (3, residual)] {
            if self.has(index) {
                sum = Some(match sum {
                    Some(s) => (s + t)?,
                    None => t.clone(),
                });
            }
        }
        sum.ok_or_else(|| candle_core::Error::Msg("no abnormality head in the set".into()))
    }

    /// Whether this is all four heads.
    pub fn is_all(&self) -> bool {
        *self == Self::ALL
    }

    /// The paper's name of this set, if it is one of its Table 3 variants.
    pub fn paper_name(self) -> Option<&'static str> {
        Self::PAPER_VARIANTS
            .iter()
            .find(|(_, set)| *set == self)
            .map(|(name, _)| *name)
    }
}

impl Default for HeadSet {
    fn default() -> Self {
        Self::ALL
    }
}

impl std::fmt::Display for HeadSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = (0..4)
            .filter(|&i| self.0[i])
            .map(|i| HEAD_NAMES[i])
            .collect();
        f.write_str(&names.join(","))
    }
}

impl std::str::FromStr for HeadSet {
    type Err = String;

    /// Comma-separated head names in any order (`seen,pseudo`), or a Table 3 variant's name
    /// (`DRA2A`, any case). At least one abnormality head (seen, pseudo, residual) is needed:
    /// the normality head alone gives no anomaly evidence and no map.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if let Some((_, set)) = Self::PAPER_VARIANTS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s.trim()))
        {
            return Ok(*set);
        }
        let mut flags = [false; 4];
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let i = HEAD_NAMES.iter().position(|h| *h == name).ok_or_else(|| {
                format!(
                    "unknown head `{name}`; valid: {} (or a variant: {})",
                    HEAD_NAMES.join(", "),
                    Self::PAPER_VARIANTS.map(|(n, _)| n).join(", ")
                )
            })?;
            flags[i] = true;
        }
        if !(flags[1] || flags[2] || flags[3]) {
            return Err(
                "give at least one abnormality head (seen, pseudo, residual): the normality head \
                 alone scores no anomaly"
                    .into(),
            );
        }
        Ok(Self(flags))
    }
}

impl Serialize for HeadSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HeadSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_variants_round_trip() {
        let set: HeadSet = "pseudo, seen".parse().unwrap();
        assert_eq!(set.to_string(), "seen,pseudo");
        assert_eq!(set.paper_name(), Some("DRA2A"));
        assert_eq!(
            "dra3an".parse::<HeadSet>().unwrap().to_string(),
            "normal,seen,pseudo"
        );
        assert!("dra".parse::<HeadSet>().unwrap().is_all());
        assert!("normal"
            .parse::<HeadSet>()
            .unwrap_err()
            .contains("abnormality head"));
        assert!("seen,eyes"
            .parse::<HeadSet>()
            .unwrap_err()
            .contains("unknown head `eyes`"));
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "\"seen,pseudo\"");
        assert_eq!(serde_json::from_str::<HeadSet>(&json).unwrap(), set);
    }
}
