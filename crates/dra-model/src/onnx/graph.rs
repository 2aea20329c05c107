//! An ONNX graph as the layers write it: each layer's `export` adds its nodes and constant
//! tensors and returns the name of its output, as its `forward` returns a tensor, so a model is
//! exported by the same walk that runs it.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor};
use prost::Message;

use super::proto::{
    attribute_type, AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto,
    TypeProto, ValueInfoProto, FLOAT, INT64,
};

/// The standard operator set every exported graph binds to: ONNX 1.12's (checked here in
/// tract 0.22 and ONNX Runtime 1.32; docs/deploy.md).
pub const OPSET: i64 = 17;
/// The IR version of opset 17 (ONNX 1.12).
const IR_VERSION: i64 = 8;

/// A dimension of a graph input or output: fixed, or named and chosen by the runtime.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A size the runtime takes from the input (`"batch"`).
    Named(&'static str),
}

/// A graph under construction.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    /// How many values each name stem has had, for unique names.
    taken: HashMap<String, usize>,
}

/// An attribute of a node.
pub enum Attr<'a> {
    /// An integer.
    Int(&'a str, i64),
    /// A list of integers.
    Ints(&'a str, &'a [i64]),
    /// A float.
    Float(&'a str, f32),
    /// A string.
    Str(&'a str, &'a str),
}

impl Attr<'_> {
    fn proto(&self) -> AttributeProto {
        let mut a = AttributeProto::default();
        match *self {
            Attr::Int(name, i) => {
                (a.name, a.r#type, a.i) = (name.into(), attribute_type::INT, i);
            }
            Attr::Ints(name, ints) => {
                (a.name, a.r#type, a.ints) = (name.into(), attribute_type::INTS, ints.to_vec());
            }
            Attr::Float(name, f) => {
                (a.name, a.r#type, a.f) = (name.into(), attribute_type::FLOAT, f);
            }
            Attr::Str(name, s) => {
                (a.name, a.r#type, a.s) = (name.into(), attribute_type::STRING, s.into());
            }
        }
        a
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => DimensionValue::DimValue(*n as i64),
                Dim::Named(s) => DimensionValue::DimParam((*s).into()),
            }),
            denotation: String::new(),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            }),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// A name not used yet, from `stem` (`stem`, then `stem_1`, `stem_2`, …).
    fn fresh(&mut self, stem: &str) -> String {
        let n = self.taken.entry(stem.to_string()).or_insert(0);
        let name = if *n == 0 {
            stem.to_string()
        } else {
            format!("{stem}_{n}")
        };
        *n += 1;
        name
    }

    /// Declares a float32 input of the graph.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        let name = self.fresh(name);
        self.inputs.push(value_info(&name, FLOAT, dims));
        name
    }

    /// Declares `value` an output of the graph under `name` (through an `Identity` node where
    /// the names differ).
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) {
        let value = if value == name {
            value.to_string()
        } else {
            self.nodes.push(NodeProto {
                input: vec![value.into()],
                output: vec![name.into()],
                name: format!("{name}_identity"),
                op_type: "Identity".into(),
                ..Default::default()
            });
            name.to_string()
        };
        self.outputs.push(value_info(&value, FLOAT, dims));
    }

    /// A float32 constant (an initializer) named `name` holding `tensor`'s values; returns its
    /// name. A name given again is the same constant (a layer exported once per level of the
    /// pyramid stores its weights once), so `name` must say which tensor it is: the weight's
    /// own name.
    pub fn constant(&mut self, name: &str, tensor: &Tensor) -> Result<String> {
        if self.initializers.iter().any(|t| t.name == name) {
            return Ok(name.to_string());
        }
        let name = self.fresh(name);
        let values = tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            dims: tensor.dims().iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            raw_data,
            name: name.clone(),
            ..Default::default()
        });
        Ok(name)
    }

    /// A layer's `weight` and, where it has one, `bias` as constants named `name.weight` and
    /// `name.bias`: the trailing inputs of its node (`Conv`, `Gemm`), in that order.
    pub fn parameters(
        &mut self,
        name: &str,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Vec<String>> {
        let mut names = vec![self.constant(&format!("{name}.weight"), weight)?];
        if let Some(bias) = bias {
            names.push(self.constant(&format!("{name}.bias"), bias)?);
        }
        Ok(names)
    }

    /// An int64 constant (shapes, axes, indices); returns its name.
    pub fn constant_i64(&mut self, name: &str, values: &[i64]) -> String {
        let name = self.fresh(name);
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: INT64,
            int64_data: values.to_vec(),
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    /// Adds a node of the standard operator `op` with one output, named from `name`; returns
    /// the output's name.
    pub fn node(&mut self, op: &str, name: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        self.node_outputs(op, name, inputs, attrs, 1).remove(0)
    }

    /// [`Graph::node`] for an operator of `outputs` outputs (`TopK`: values and indices);
    /// returns their names, `name`, `name.1`, ….
    pub fn node_outputs(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: &[Attr],
        outputs: usize,
    ) -> Vec<String> {
        let first = self.fresh(name);
        let names: Vec<String> = std::iter::once(first.clone())
            .chain((1..outputs).map(|k| format!("{first}.{k}")))
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: names.clone(),
            name: first,
            op_type: op.into(),
            attribute: attrs.iter().map(Attr::proto).collect(),
            ..Default::default()
        });
        names
    }

    /// The model: this graph on [`OPSET`], produced by dra-rs, with `metadata` as its
    /// `metadata_props`.
    pub fn into_model(self, name: &str, metadata: &[(String, String)]) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "dra-rs".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: name.into(),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            metadata_props: metadata
                .iter()
                .map(|(key, value)| StringStringEntryProto {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// A model's bytes, as an `.onnx` file holds them.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}
