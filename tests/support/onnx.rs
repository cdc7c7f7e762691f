//! A tiny ONNX encoder for tests (no Python, no protobuf crate), and tract helpers.

use tract_onnx::prelude::*;

pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn bytes_field(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    varint(out, (u64::from(number) << 3) | 2);
    varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

pub fn uint_field(out: &mut Vec<u8>, number: u32, v: u64) {
    varint(out, u64::from(number) << 3);
    varint(out, v);
}

/// AttributeProto INT.
pub fn attr_int(name: &str, v: i64) -> Vec<u8> {
    let mut b = Vec::new();
    bytes_field(&mut b, 1, name.as_bytes());
    uint_field(&mut b, 3, v as u64);
    uint_field(&mut b, 20, 2);
    b
}

/// AttributeProto INTS.
pub fn attr_ints(name: &str, v: &[i64]) -> Vec<u8> {
    let mut b = Vec::new();
    bytes_field(&mut b, 1, name.as_bytes());
    for &x in v {
        uint_field(&mut b, 8, x as u64);
    }
    uint_field(&mut b, 20, 7);
    b
}

/// AttributeProto STRING.
pub fn attr_str(name: &str, s: &str) -> Vec<u8> {
    let mut b = Vec::new();
    bytes_field(&mut b, 1, name.as_bytes());
    bytes_field(&mut b, 4, s.as_bytes());
    uint_field(&mut b, 20, 3);
    b
}

/// NodeProto; `extra` is appended raw (unknown fields, doc strings).
pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: &[Vec<u8>], extra: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for i in inputs {
        bytes_field(&mut b, 1, i.as_bytes());
    }
    for o in outputs {
        bytes_field(&mut b, 2, o.as_bytes());
    }
    if !name.is_empty() {
        bytes_field(&mut b, 3, name.as_bytes());
    }
    bytes_field(&mut b, 4, op.as_bytes());
    for a in attrs {
        bytes_field(&mut b, 5, a);
    }
    b.extend_from_slice(extra);
    b
}

/// TensorProto FLOAT with raw_data.
pub fn tensor(name: &str, dims: &[usize], data: &[f32]) -> Vec<u8> {
    let mut b = Vec::new();
    for &d in dims {
        uint_field(&mut b, 1, d as u64);
    }
    uint_field(&mut b, 2, 1);
    bytes_field(&mut b, 8, name.as_bytes());
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes_field(&mut b, 9, &raw);
    b
}

/// TensorProto INT64 with raw_data.
pub fn int_tensor(name: &str, dims: &[usize], data: &[i64]) -> Vec<u8> {
    let mut b = Vec::new();
    for &d in dims {
        uint_field(&mut b, 1, d as u64);
    }
    uint_field(&mut b, 2, 7);
    bytes_field(&mut b, 8, name.as_bytes());
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes_field(&mut b, 9, &raw);
    b
}

/// A 1-D INT64 initializer.
pub fn ints(name: &str, data: &[i64]) -> Vec<u8> {
    int_tensor(name, &[data.len()], data)
}

/// AttributeProto FLOAT.
pub fn attr_float(name: &str, v: f32) -> Vec<u8> {
    let mut b = Vec::new();
    bytes_field(&mut b, 1, name.as_bytes());
    varint(&mut b, (2 << 3) | 5);
    b.extend_from_slice(&v.to_le_bytes());
    uint_field(&mut b, 20, 1);
    b
}

/// AttributeProto TENSOR.
pub fn attr_tensor(name: &str, tensor: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    bytes_field(&mut b, 1, name.as_bytes());
    bytes_field(&mut b, 5, tensor);
    uint_field(&mut b, 20, 4);
    b
}

/// ValueInfoProto of a float tensor; a dim `None` is unknown.
pub fn value_info(name: &str, dims: &[Option<usize>]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        if let Some(v) = d {
            uint_field(&mut dim, 1, *v as u64);
        }
        bytes_field(&mut shape, 1, &dim);
    }
    let mut tt = Vec::new();
    uint_field(&mut tt, 1, 1);
    bytes_field(&mut tt, 2, &shape);
    let mut ty = Vec::new();
    bytes_field(&mut ty, 1, &tt);
    let mut b = Vec::new();
    bytes_field(&mut b, 1, name.as_bytes());
    bytes_field(&mut b, 2, &ty);
    b
}

/// A graph under construction.
#[derive(Default, Clone)]
pub struct Graph {
    pub nodes: Vec<Vec<u8>>,
    pub inits: Vec<Vec<u8>>,
    pub inputs: Vec<Vec<u8>>,
    pub outputs: Vec<Vec<u8>>,
    pub value_info: Vec<Vec<u8>>,
    /// Raw bytes appended at the end of the GraphProto.
    pub extra: Vec<u8>,
}

impl Graph {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for n in &self.nodes {
            bytes_field(&mut b, 1, n);
        }
        bytes_field(&mut b, 2, b"test-graph");
        for t in &self.inits {
            bytes_field(&mut b, 5, t);
        }
        bytes_field(&mut b, 10, b"graph doc string");
        for i in &self.inputs {
            bytes_field(&mut b, 11, i);
        }
        for o in &self.outputs {
            bytes_field(&mut b, 12, o);
        }
        for v in &self.value_info {
            bytes_field(&mut b, 13, v);
        }
        b.extend_from_slice(&self.extra);
        b
    }
}

/// ModelProto: IR 8, producer, opset `opset`, the graph, a metadata entry and `extra` raw bytes.
pub fn model(graph: &Graph, opset: u64, extra: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    uint_field(&mut b, 1, 8);
    bytes_field(&mut b, 2, b"dac-tests");
    bytes_field(&mut b, 3, b"0.0");
    bytes_field(&mut b, 6, b"model doc string");
    bytes_field(&mut b, 7, &graph.encode());
    let mut op = Vec::new();
    bytes_field(&mut op, 1, b"");
    uint_field(&mut op, 2, opset);
    bytes_field(&mut b, 8, &op);
    let mut meta = Vec::new();
    bytes_field(&mut meta, 1, b"author");
    bytes_field(&mut meta, 2, b"tests");
    bytes_field(&mut b, 14, &meta);
    b.extend_from_slice(extra);
    b
}

/// Runs a model in tract on one input; returns the first output, flattened.
pub fn run_tract(model: &[u8], shape: &[usize], input: &[f32]) -> Vec<f32> {
    let m = tract_onnx::onnx()
        .model_for_read(&mut &model[..])
        .expect("tract reads the model")
        .with_input_fact(0, f32::fact(shape).into())
        .expect("input fact")
        .into_optimized()
        .expect("tract optimises the model")
        .into_runnable()
        .expect("runnable");
    let x = Tensor::from_shape(shape, input).expect("input tensor");
    let out = m.run(tvec!(x.into_tvalue())).expect("tract runs the model");
    out[0].to_plain_array_view::<f32>().expect("f32 output").iter().copied().collect()
}

/// Largest |a - b| over the largest |a|.
pub fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
