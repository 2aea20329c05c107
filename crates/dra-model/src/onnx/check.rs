//! The rules of ONNX's checker that hold for any graph this crate writes, applied without
//! Python: one opset of the default domain, every node a standard operator of it, names
//! assigned once, nodes in topological order, every value used defined first, every output
//! produced. Shapes are inferred by loading the model in a runtime (the tests use tract).

use std::collections::HashSet;

use super::proto::ModelProto;
use super::OPSET;

/// The standard operators the exports use: a node of any other type is an error, so that an
/// operator added later is added here knowingly (and checked in the runtimes we name).
const OPERATORS: [&str; 19] = [
    "Abs",
    "Add",
    "BatchNormalization",
    "Clip",
    "Conv",
    "Div",
    "Flatten",
    "Gather",
    "Gemm",
    "Identity",
    "MatMul",
    "MaxPool",
    "Mul",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Sub",
    "TopK",
];

/// Checks `model` against the rules above; the error names the first rule broken and where.
pub fn check(model: &ModelProto) -> Result<(), String> {
    match model.opset_import.as_slice() {
        [op] if op.domain.is_empty() && op.version == OPSET => {}
        other => {
            let got: Vec<String> = other
                .iter()
                .map(|o| format!("{}:{}", o.domain, o.version))
                .collect();
            return Err(format!(
                "the model must import the default opset {OPSET} alone, not {got:?}"
            ));
        }
    }
    let graph = model.graph.as_ref().ok_or("the model has no graph")?;
    let mut defined: HashSet<&str> = HashSet::new();
    let inputs = graph.input.iter().map(|i| i.name.as_str());
    let constants = graph.initializer.iter().map(|t| t.name.as_str());
    for name in inputs.chain(constants) {
        if name.is_empty() {
            return Err("a graph input or initializer has no name".into());
        }
        if !defined.insert(name) {
            return Err(format!("`{name}` is defined twice"));
        }
    }
    for node in &graph.node {
        if !node.domain.is_empty() {
            return Err(format!(
                "node `{}` is in the custom domain `{}`",
                node.name, node.domain
            ));
        }
        if !OPERATORS.contains(&node.op_type.as_str()) {
            return Err(format!(
                "node `{}`: `{}` is not among the standard operators the export uses",
                node.name, node.op_type
            ));
        }
        for input in &node.input {
            if !input.is_empty() && !defined.contains(input.as_str()) {
                return Err(format!(
                    "node `{}` reads `{input}` before anything defines it",
                    node.name
                ));
            }
        }
        for output in &node.output {
            if !defined.insert(output.as_str()) {
                return Err(format!(
                    "node `{}` defines `{output}`, defined before",
                    node.name
                ));
            }
        }
    }
    for output in &graph.output {
        if !defined.contains(output.name.as_str()) {
            return Err(format!("the output `{}` is never computed", output.name));
        }
    }
    Ok(())
}
