//! Hand-edited JSON records for the workspace's property tests.

use proptest::prelude::*;
use proptest::sample::Index;

/// What a damaged or hand-edited file may hold where a value was.
pub fn leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        prop::sample::select(vec![0i64, 1, -1, 2, 3, 7, 100_000, i64::MAX, i64::MIN])
            .prop_map(serde_json::Value::from),
        prop::sample::select(vec![0.0f64, 0.5, -1.5, 1e-300, 1e300])
            .prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "",
            "dra",
            "mobilenet_v2",
            "bce",
            "quick",
            "/",
            "nan",
            "a,\"b"
        ])
        .prop_map(serde_json::Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
    ]
}

/// `value` with the leaves picked by `edits` replaced.
pub fn edit(
    mut value: serde_json::Value,
    edits: Vec<(Index, serde_json::Value)>,
) -> serde_json::Value {
    for (at, new) in edits {
        let mut all = leaves(&mut value);
        let i = at.index(all.len());
        *all[i] = new;
    }
    value
}

/// Every leaf of a JSON value, as a mutable reference.
fn leaves(v: &mut serde_json::Value) -> Vec<&mut serde_json::Value> {
    match v {
        serde_json::Value::Array(a) => a.iter_mut().flat_map(leaves).collect(),
        serde_json::Value::Object(o) => o.values_mut().flat_map(leaves).collect(),
        other => vec![other],
    }
}
