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
    typed_value_info(name, DT_FLOAT, dims)
}

/// `TensorProto.DataType` codes.
pub const DT_FLOAT: u64 = 1;
pub const DT_FLOAT16: u64 = 10;
pub const DT_DOUBLE: u64 = 11;
pub const DT_BFLOAT16: u64 = 16;

/// TensorProto of `data_type` (FLOAT, FLOAT16, BFLOAT16 or DOUBLE) holding `data` rounded to
/// it, in `raw_data` or (`typed`) in the typed field: `float_data` (packed), `int32_data` (the
/// 16-bit patterns, one varint each, unpacked) or `double_data` (packed).
pub fn typed_tensor(name: &str, dims: &[usize], data_type: u64, data: &[f64], typed: bool) -> Vec<u8> {
    let mut b = Vec::new();
    for &d in dims {
        uint_field(&mut b, 1, d as u64);
    }
    uint_field(&mut b, 2, data_type);
    bytes_field(&mut b, 8, name.as_bytes());
    let bits16 = |v: f64| match data_type {
        DT_FLOAT16 => half::f16::from_f64(v).to_bits(),
        _ => half::bf16::from_f64(v).to_bits(),
    };
    match (data_type, typed) {
        (DT_FLOAT, false) => {
            bytes_field(&mut b, 9, &data.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect::<Vec<_>>())
        }
        (DT_FLOAT, true) => {
            bytes_field(&mut b, 4, &data.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect::<Vec<_>>())
        }
        (DT_DOUBLE, false) => bytes_field(&mut b, 9, &data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()),
        (DT_DOUBLE, true) => bytes_field(&mut b, 10, &data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()),
        (_, false) => bytes_field(&mut b, 9, &data.iter().flat_map(|&v| bits16(v).to_le_bytes()).collect::<Vec<_>>()),
        (_, true) => {
            for &v in data {
                uint_field(&mut b, 5, u64::from(bits16(v)));
            }
        }
    }
    b
}

/// ValueInfoProto of a tensor of `elem_type`; a dim `None` is unknown.
pub fn typed_value_info(name: &str, elem_type: u64, dims: &[Option<usize>]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        if let Some(v) = d {
            uint_field(&mut dim, 1, *v as u64);
        }
        bytes_field(&mut shape, 1, &dim);
    }
    let mut tt = Vec::new();
    uint_field(&mut tt, 1, elem_type);
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
    /// Lists every initializer as a graph input too (as old exporters do), with its dims.
    pub fn list_initializers_as_inputs(&mut self) {
        for t in &self.inits {
            let f = fields(t);
            let name = f.iter().find(|f| f.number == 8).map(|f| String::from_utf8_lossy(f.bytes).into_owned());
            let dims: Vec<Option<usize>> = f.iter().filter(|f| f.number == 1).map(|f| Some(f.value as usize)).collect();
            self.inputs.push(value_info(&name.expect("a named initializer"), &dims));
        }
    }

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
    model_ir(graph, opset, 8, extra)
}

/// [`model`] of IR version `ir`.
pub fn model_ir(graph: &Graph, opset: u64, ir: u64, extra: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    uint_field(&mut b, 1, ir);
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

/// Runs a model whose input and output are of `dt` in tract on one input given in f32;
/// returns the first output as f32.
pub fn run_tract_as(model: &[u8], shape: &[usize], input: &[f32], dt: DatumType) -> Vec<f32> {
    let m = tract_onnx::onnx()
        .model_for_read(&mut &model[..])
        .expect("tract reads the model")
        .with_input_fact(0, InferenceFact::dt_shape(dt, shape))
        .expect("input fact")
        .into_optimized()
        .expect("tract optimises the model")
        .into_runnable()
        .expect("runnable");
    let x = Tensor::from_shape(shape, input).expect("input tensor").cast_to_dt(dt).expect("cast").into_owned();
    let out = m.run(tvec!(x.into_tvalue())).expect("tract runs the model");
    let y = out[0].cast_to::<f32>().expect("f32 output").into_owned();
    y.to_plain_array_view::<f32>().expect("f32 output").iter().copied().collect()
}

/// One protobuf field as read back by [`fields`]: its number, its payload (a varint's value,
/// a fixed field's bits, or a length-delimited field's bytes) and its exact encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Field<'a> {
    pub number: u32,
    pub value: u64,
    pub bytes: &'a [u8],
    pub raw: &'a [u8],
}

fn read_varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
    }
    v
}

/// The fields of a protobuf message, in order (a test-side reader, independent of the crate's).
pub fn fields(b: &[u8]) -> Vec<Field<'_>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let start = pos;
        let key = read_varint(b, &mut pos);
        let (number, wire) = ((key >> 3) as u32, key & 7);
        let (value, bytes) = match wire {
            0 => (read_varint(b, &mut pos), &b[pos..pos]),
            1 => {
                pos += 8;
                (u64::from_le_bytes(b[pos - 8..pos].try_into().unwrap()), &b[pos - 8..pos])
            }
            2 => {
                let n = read_varint(b, &mut pos) as usize;
                pos += n;
                (n as u64, &b[pos - n..pos])
            }
            5 => {
                pos += 4;
                (u64::from(u32::from_le_bytes(b[pos - 4..pos].try_into().unwrap())), &b[pos - 4..pos])
            }
            w => panic!("wire type {w} at byte {start}"),
        };
        out.push(Field { number, value, bytes, raw: &b[start..pos] });
    }
    out
}

/// The graph's fields of a model.
pub fn graph_fields(model: &[u8]) -> Vec<Field<'_>> {
    fields(fields(model).into_iter().find(|f| f.number == 7).expect("a graph").bytes)
}

/// The first string field `number` of a message.
pub fn string_field(message: &[u8], number: u32) -> String {
    fields(message)
        .iter()
        .find(|f| f.number == number)
        .map(|f| String::from_utf8_lossy(f.bytes).into_owned())
        .unwrap_or_default()
}

/// A BFLOAT16 model made FLOAT: every BFLOAT16 initializer widened exactly (raw or int32_data),
/// every graph input and output declared FLOAT with `dims`, everything else as it was.
pub fn widen_bf16(model: &[u8], io_dims: &[(&str, Vec<Option<usize>>)]) -> Vec<u8> {
    let mut graph = Vec::new();
    for f in graph_fields(model) {
        match f.number {
            5 if fields(f.bytes).iter().any(|t| t.number == 2 && t.value == DT_BFLOAT16) => {
                let t = fields(f.bytes);
                let dims: Vec<usize> = t.iter().filter(|x| x.number == 1).map(|x| x.value as usize).collect();
                let mut v: Vec<f64> = Vec::new();
                for x in &t {
                    match x.number {
                        9 => {
                            v.extend(x.bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()))
                        }
                        5 => v.push(half::bf16::from_bits(x.value as u16).to_f64()),
                        _ => {}
                    }
                }
                bytes_field(&mut graph, 5, &typed_tensor(&string_field(f.bytes, 8), &dims, DT_FLOAT, &v, false));
            }
            11 | 12 => {
                let name = string_field(f.bytes, 1);
                let dims = &io_dims.iter().find(|(n, _)| *n == name).expect("declared input/output").1;
                bytes_field(&mut graph, f.number, &value_info(&name, dims));
            }
            _ => graph.extend_from_slice(f.raw),
        }
    }
    let mut out = Vec::new();
    for f in fields(model) {
        if f.number == 7 {
            bytes_field(&mut out, 7, &graph);
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    out
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
