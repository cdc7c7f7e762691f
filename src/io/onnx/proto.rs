//! Read-only views of the ONNX messages the rewrite looks into, and encoders for the few it
//! writes. Field numbers are those of `onnx.proto` (ONNX 1.x, stable since IR version 3).
//!
//! Everything a view does not decode stays available as raw fields, so that re-encoding a
//! message it did not change reproduces its bytes.

use super::external::ExternalRef;
use super::wire::{self, Field, Value, WireError};

// ModelProto
pub(crate) const MODEL_OPSET_IMPORT: u32 = 8;
pub(crate) const MODEL_IR_VERSION: u32 = 1;
pub(crate) const MODEL_GRAPH: u32 = 7;
// OperatorSetIdProto
const OPSET_DOMAIN: u32 = 1;
const OPSET_VERSION: u32 = 2;
// GraphProto
pub(crate) const GRAPH_NODE: u32 = 1;
pub(crate) const GRAPH_INITIALIZER: u32 = 5;
pub(crate) const GRAPH_INPUT: u32 = 11;
pub(crate) const GRAPH_OUTPUT: u32 = 12;
pub(crate) const GRAPH_VALUE_INFO: u32 = 13;
pub(crate) const GRAPH_SPARSE_INITIALIZER: u32 = 15;
// NodeProto
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_NAME: u32 = 3;
const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
const NODE_DOMAIN: u32 = 7;
// AttributeProto
const ATTR_NAME: u32 = 1;
const ATTR_F: u32 = 2;
const ATTR_I: u32 = 3;
const ATTR_S: u32 = 4;
const ATTR_T: u32 = 5;
const ATTR_G: u32 = 6;
const ATTR_FLOATS: u32 = 7;
const ATTR_INTS: u32 = 8;
const ATTR_GRAPHS: u32 = 11;
const ATTR_TYPE: u32 = 20;
const ATTR_TYPE_INT: u64 = 2;
const ATTR_TYPE_INTS: u64 = 7;
// TensorProto
const TENSOR_DIMS: u32 = 1;
const TENSOR_DATA_TYPE: u32 = 2;
const TENSOR_FLOAT_DATA: u32 = 4;
const TENSOR_INT32_DATA: u32 = 5;
const TENSOR_INT64_DATA: u32 = 7;
const TENSOR_NAME: u32 = 8;
pub(crate) const TENSOR_RAW_DATA: u32 = 9;
const TENSOR_DOUBLE_DATA: u32 = 10;
pub(crate) const TENSOR_EXTERNAL_DATA: u32 = 13;
pub(crate) const TENSOR_DATA_LOCATION: u32 = 14;
// ValueInfoProto / TypeProto / TypeProto.Tensor / TensorShapeProto / Dimension
const VALUE_INFO_NAME: u32 = 1;
const VALUE_INFO_TYPE: u32 = 2;
const TYPE_TENSOR: u32 = 1;
const TENSOR_TYPE_ELEM: u32 = 1;
const TENSOR_TYPE_SHAPE: u32 = 2;
const SHAPE_DIM: u32 = 1;
const DIM_VALUE: u32 = 1;

/// `TensorProto.DataType` values `dac` reads and writes.
pub(crate) const DT_FLOAT: i64 = 1;
pub(crate) const DT_INT32: i64 = 6;
pub(crate) const DT_INT64: i64 = 7;
pub(crate) const DT_FLOAT16: i64 = 10;
pub(crate) const DT_DOUBLE: i64 = 11;
pub(crate) const DT_BFLOAT16: i64 = 16;

/// The ONNX name of a tensor data type (`"float"`, `"double"`, ...).
pub(crate) fn data_type_name(data_type: i64) -> &'static str {
    match data_type {
        DT_FLOAT => "float",
        DT_FLOAT16 => "float16",
        DT_DOUBLE => "double",
        DT_BFLOAT16 => "bfloat16",
        _ => "other",
    }
}

/// Deepest subgraph nesting followed when collecting names.
const MAX_DEPTH: usize = 64;

/// A problem found while decoding, before the file name is attached.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    /// `node `x``, `initializer `w``, `graph`, `model`...
    pub location: String,
    /// What is wrong.
    pub reason: String,
}

impl Problem {
    pub(crate) fn new(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { location: location.into(), reason: reason.into() }
    }
    fn wire(location: impl Into<String>, e: WireError) -> Self {
        Self::new(location, e.to_string())
    }
}

pub(crate) type PResult<T> = std::result::Result<T, Problem>;

fn utf8<'a>(b: &'a [u8], location: &str, what: &str) -> PResult<&'a str> {
    std::str::from_utf8(b).map_err(|e| Problem::new(location, format!("{what} is not valid UTF-8: {e}")))
}

fn expect_bytes<'a>(f: &Field<'a>, location: &str, what: &str) -> PResult<&'a [u8]> {
    f.bytes().ok_or_else(|| Problem::new(location, format!("{what} (field {}) has the wrong wire type", f.number)))
}

fn expect_varint(f: &Field<'_>, location: &str, what: &str) -> PResult<u64> {
    f.varint().ok_or_else(|| Problem::new(location, format!("{what} (field {}) has the wrong wire type", f.number)))
}

fn ints(f: &Field<'_>, location: &str, what: &str) -> PResult<Vec<i64>> {
    let mut v = Vec::new();
    wire::repeated_varints(f, &mut v).map_err(|e| Problem::new(location, format!("{what}: {e}")))?;
    Ok(v.into_iter().map(|x| x as i64).collect())
}

fn fixed32(f: &Field<'_>, location: &str, what: &str) -> PResult<f32> {
    match f.value {
        Value::Fixed32(x) => Ok(f32::from_bits(x)),
        _ => Err(Problem::new(location, format!("{what} (field {}) has the wrong wire type", f.number))),
    }
}

fn floats(f: &Field<'_>, location: &str, what: &str) -> PResult<Vec<f32>> {
    match f.value {
        Value::Fixed32(x) => Ok(vec![f32::from_bits(x)]),
        Value::Bytes(b) if b.len() % 4 == 0 => {
            Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        _ => Err(Problem::new(location, format!("{what} (field {}) is not a list of floats", f.number))),
    }
}

/// The default-domain opset version the model imports (`None` when it imports none).
pub(crate) fn default_opset(model_fields: &[Field<'_>]) -> PResult<Option<i64>> {
    let mut version = None;
    for f in model_fields.iter().filter(|f| f.number == MODEL_OPSET_IMPORT) {
        let b = expect_bytes(f, "model", "opset_import")?;
        let (mut domain, mut v) = ("", None);
        for g in wire::parse(b).map_err(|e| Problem::wire("model opset_import", e))? {
            match g.number {
                OPSET_DOMAIN => domain = utf8(expect_bytes(&g, "model", "opset domain")?, "model", "opset domain")?,
                OPSET_VERSION => v = Some(expect_varint(&g, "model", "opset version")? as i64),
                _ => {}
            }
        }
        if domain.is_empty() || domain == "ai.onnx" {
            version = v.or(version);
        }
    }
    Ok(version)
}

/// One attribute of a node.
#[derive(Debug, Clone)]
pub(crate) struct Attr<'a> {
    /// The AttributeProto's bytes (without the enclosing key and length).
    pub payload: &'a [u8],
    pub name: &'a str,
    pub i: Option<i64>,
    pub ints: Vec<i64>,
    pub s: Option<&'a [u8]>,
    pub f: Option<f32>,
    pub floats: Vec<f32>,
    /// A tensor value (`t`), undecoded.
    pub t: Option<&'a [u8]>,
    /// Subgraphs (`g` and `graphs`).
    pub graphs: Vec<&'a [u8]>,
}

/// A node, decoded.
#[derive(Debug, Clone)]
pub(crate) struct Node<'a> {
    /// Every field of the NodeProto, in order.
    pub fields: Vec<Field<'a>>,
    pub inputs: Vec<&'a str>,
    pub outputs: Vec<&'a str>,
    pub name: &'a str,
    pub op_type: &'a str,
    pub domain: &'a str,
    pub attrs: Vec<Attr<'a>>,
}

impl<'a> Node<'a> {
    pub(crate) fn parse(b: &'a [u8], index: usize) -> PResult<Self> {
        let loc = format!("node #{index}");
        let fields = wire::parse(b).map_err(|e| Problem::wire(&loc, e))?;
        let mut node = Node {
            fields: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            name: "",
            op_type: "",
            domain: "",
            attrs: Vec::new(),
        };
        for f in &fields {
            match f.number {
                NODE_INPUT => node.inputs.push(utf8(expect_bytes(f, &loc, "input")?, &loc, "input")?),
                NODE_OUTPUT => node.outputs.push(utf8(expect_bytes(f, &loc, "output")?, &loc, "output")?),
                NODE_NAME => node.name = utf8(expect_bytes(f, &loc, "name")?, &loc, "name")?,
                NODE_OP_TYPE => node.op_type = utf8(expect_bytes(f, &loc, "op_type")?, &loc, "op_type")?,
                NODE_DOMAIN => node.domain = utf8(expect_bytes(f, &loc, "domain")?, &loc, "domain")?,
                _ => {}
            }
        }
        let loc = node.label(index);
        for f in fields.iter().filter(|f| f.number == NODE_ATTRIBUTE) {
            node.attrs.push(Attr::parse(expect_bytes(f, &loc, "attribute")?, &loc)?);
        }
        node.fields = fields;
        Ok(node)
    }

    /// `node `name`` (or `node #i (op)` when unnamed), for messages.
    pub(crate) fn label(&self, index: usize) -> String {
        if self.name.is_empty() {
            format!("node #{index} ({})", self.op_type)
        } else {
            format!("node `{}`", self.name)
        }
    }

    pub(crate) fn attr(&self, name: &str) -> Option<&Attr<'a>> {
        self.attrs.iter().rev().find(|a| a.name == name)
    }

    /// Whether this is an ONNX-domain operator of this type.
    pub(crate) fn is(&self, op: &str) -> bool {
        self.op_type == op && (self.domain.is_empty() || self.domain == "ai.onnx")
    }

    /// The node's fields other than inputs, outputs, name, op_type, attributes and domain
    /// (doc_string, metadata, unknown fields), raw.
    pub(crate) fn extra_fields(&self) -> impl Iterator<Item = &Field<'a>> + '_ {
        self.fields.iter().filter(|f| {
            !matches!(f.number, NODE_INPUT | NODE_OUTPUT | NODE_NAME | NODE_OP_TYPE | NODE_ATTRIBUTE | NODE_DOMAIN)
        })
    }
}

impl<'a> Attr<'a> {
    fn parse(b: &'a [u8], loc: &str) -> PResult<Self> {
        let fields = wire::parse(b).map_err(|e| Problem::new(loc, format!("attribute: {e}")))?;
        let mut a = Attr {
            payload: b,
            name: "",
            i: None,
            ints: Vec::new(),
            s: None,
            f: None,
            floats: Vec::new(),
            t: None,
            graphs: Vec::new(),
        };
        for f in &fields {
            if f.number == ATTR_NAME {
                a.name = utf8(expect_bytes(f, loc, "attribute name")?, loc, "attribute name")?;
            }
        }
        let what = format!("attribute `{}`", a.name);
        for f in &fields {
            match f.number {
                ATTR_I => a.i = Some(expect_varint(f, loc, &what)? as i64),
                ATTR_INTS => a.ints.extend(ints(f, loc, &what)?),
                ATTR_S => a.s = Some(expect_bytes(f, loc, &what)?),
                ATTR_T => a.t = Some(expect_bytes(f, loc, &what)?),
                ATTR_F => a.f = Some(fixed32(f, loc, &what)?),
                ATTR_FLOATS => a.floats.extend(floats(f, loc, &what)?),
                ATTR_G | ATTR_GRAPHS => a.graphs.push(expect_bytes(f, loc, &what)?),
                _ => {}
            }
        }
        Ok(a)
    }
}

/// Encodes an INT attribute.
pub(crate) fn attr_int(name: &str, v: i64) -> Vec<u8> {
    let mut b = Vec::new();
    wire::put_bytes(&mut b, ATTR_NAME, name.as_bytes());
    wire::put_uint(&mut b, ATTR_I, v as u64);
    wire::put_uint(&mut b, ATTR_TYPE, ATTR_TYPE_INT);
    b
}

/// Encodes an INTS attribute.
pub(crate) fn attr_ints(name: &str, v: &[i64]) -> Vec<u8> {
    let mut b = Vec::new();
    wire::put_bytes(&mut b, ATTR_NAME, name.as_bytes());
    for &x in v {
        wire::put_uint(&mut b, ATTR_INTS, x as u64);
    }
    wire::put_uint(&mut b, ATTR_TYPE, ATTR_TYPE_INTS);
    b
}

/// A node to encode.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewNode<'a> {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub name: String,
    pub op_type: &'static str,
    /// AttributeProto payloads.
    pub attrs: Vec<Vec<u8>>,
    /// Raw fields copied from the original node (doc_string, unknown fields).
    pub extra: Vec<&'a [u8]>,
    pub domain: String,
}

impl NewNode<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for i in &self.inputs {
            wire::put_bytes(&mut b, NODE_INPUT, i.as_bytes());
        }
        for o in &self.outputs {
            wire::put_bytes(&mut b, NODE_OUTPUT, o.as_bytes());
        }
        if !self.name.is_empty() {
            wire::put_bytes(&mut b, NODE_NAME, self.name.as_bytes());
        }
        wire::put_bytes(&mut b, NODE_OP_TYPE, self.op_type.as_bytes());
        for a in &self.attrs {
            wire::put_bytes(&mut b, NODE_ATTRIBUTE, a);
        }
        for e in &self.extra {
            b.extend_from_slice(e);
        }
        if !self.domain.is_empty() {
            wire::put_bytes(&mut b, NODE_DOMAIN, self.domain.as_bytes());
        }
        b
    }
}

/// An initializer's header and a view of its data.
#[derive(Debug, Clone)]
pub(crate) struct Tensor<'a> {
    pub name: &'a str,
    pub dims: Vec<i64>,
    pub data_type: i64,
    pub raw_data: Option<&'a [u8]>,
    /// Packed or unpacked `float_data` / `double_data` / `int32_data` fields.
    pub typed_data: Vec<Field<'a>>,
    /// Whether the data is in an external file (`data_location` EXTERNAL or `external_data`
    /// entries); [`Tensor::external_ref`] says where.
    pub external: bool,
    /// The `external_data` key/value entries.
    external_data: Vec<(&'a str, &'a str)>,
}

impl<'a> Tensor<'a> {
    pub(crate) fn parse(b: &'a [u8], index: usize) -> PResult<Self> {
        let loc = format!("initializer #{index}");
        let fields = wire::parse(b).map_err(|e| Problem::wire(&loc, e))?;
        let mut t = Tensor {
            name: "",
            dims: Vec::new(),
            data_type: 0,
            raw_data: None,
            typed_data: Vec::new(),
            external: false,
            external_data: Vec::new(),
        };
        for f in &fields {
            if f.number == TENSOR_NAME {
                t.name = utf8(expect_bytes(f, &loc, "name")?, &loc, "name")?;
            }
        }
        let loc = if t.name.is_empty() { loc } else { format!("initializer `{}`", t.name) };
        for f in &fields {
            match f.number {
                TENSOR_DIMS => t.dims.extend(ints(f, &loc, "dims")?),
                TENSOR_DATA_TYPE => t.data_type = expect_varint(f, &loc, "data_type")? as i64,
                TENSOR_RAW_DATA => t.raw_data = Some(expect_bytes(f, &loc, "raw_data")?),
                TENSOR_FLOAT_DATA | TENSOR_DOUBLE_DATA | TENSOR_INT32_DATA | TENSOR_INT64_DATA => t.typed_data.push(*f),
                TENSOR_EXTERNAL_DATA => {
                    t.external = true;
                    t.external_data.push(string_entry(expect_bytes(f, &loc, "external_data")?, &loc)?);
                }
                TENSOR_DATA_LOCATION => t.external |= expect_varint(f, &loc, "data_location")? == 1,
                _ => {}
            }
        }
        Ok(t)
    }

    /// Where the data is when it is external: the `location` entry (required), `offset` and
    /// `length` (decimal byte counts).
    pub(crate) fn external_ref(&self) -> PResult<Option<ExternalRef<'a>>> {
        if !self.external {
            return Ok(None);
        }
        let loc = format!("initializer `{}`", self.name);
        let entry = |key: &str| self.external_data.iter().rev().find(|(k, _)| *k == key).map(|&(_, v)| v);
        let bytes = |key: &str| {
            entry(key)
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|_| Problem::new(&loc, format!("external data {key} `{v}` is not a byte count")))
                })
                .transpose()
        };
        let location =
            entry("location").ok_or_else(|| Problem::new(&loc, "external data without a `location` entry"))?;
        Ok(Some(ExternalRef { location, offset: bytes("offset")?.unwrap_or(0), length: bytes("length")? }))
    }

    /// The element count its dims declare.
    pub(crate) fn numel(&self) -> Option<usize> {
        self.dims.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
    }

    /// The data of an integer tensor (INT64, INT32, INT16, INT8, UINT8, BOOL), checked against
    /// the dims; `None` for other data types.
    pub(crate) fn ints(&self) -> PResult<Option<Vec<i64>>> {
        let loc = format!("initializer `{}`", self.name);
        let width = match self.data_type {
            DT_INT64 => 8,
            DT_INT32 => 4,
            5 => 2,         // INT16
            2 | 3 | 9 => 1, // UINT8, INT8, BOOL
            _ => return Ok(None),
        };
        let n = self.numel().ok_or_else(|| Problem::new(&loc, format!("dims {:?} are invalid", self.dims)))?;
        let out: Vec<i64> = if let Some(raw) = self.raw_data {
            if Some(raw.len()) != n.checked_mul(width) {
                return Err(Problem::new(
                    &loc,
                    format!("holds {} bytes but its dims {:?} need {n} values", raw.len(), self.dims),
                ));
            }
            raw.chunks_exact(width)
                .map(|c| match (width, self.data_type) {
                    (8, _) => i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                    (4, _) => i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    (2, _) => i64::from(i16::from_le_bytes([c[0], c[1]])),
                    (_, 3) => i64::from(c[0] as i8),
                    _ => i64::from(c[0]),
                })
                .collect()
        } else {
            let want = if self.data_type == DT_INT64 { TENSOR_INT64_DATA } else { TENSOR_INT32_DATA };
            let mut bits = Vec::new();
            for f in self.typed_data.iter().filter(|f| f.number == want) {
                wire::repeated_varints(f, &mut bits).map_err(|e| Problem::new(&loc, format!("typed data: {e}")))?;
            }
            let narrow = |b: u64| if self.data_type == DT_INT64 { b as i64 } else { i64::from(b as u32 as i32) };
            bits.into_iter().map(narrow).collect()
        };
        if out.len() != n {
            return Err(Problem::new(
                &loc,
                format!("holds {} values but its dims {:?} need {n}", out.len(), self.dims),
            ));
        }
        Ok(Some(out))
    }

    /// The data as f64 values, checked against the dims. Supports FLOAT, DOUBLE, FLOAT16 and
    /// BFLOAT16, stored as raw_data or in the typed fields.
    pub(crate) fn values(&self) -> PResult<Vec<f64>> {
        let loc = format!("initializer `{}`", self.name);
        if self.external {
            return Err(Problem::new(loc, "data is stored in an external file, which dac does not read"));
        }
        let n = self.numel().ok_or_else(|| Problem::new(&loc, format!("dims {:?} are invalid", self.dims)))?;
        let width = match self.data_type {
            DT_FLOAT => 4,
            DT_DOUBLE => 8,
            DT_FLOAT16 | DT_BFLOAT16 => 2,
            other => {
                return Err(Problem::new(
                    loc,
                    format!("data type {other} is not supported (float, double, float16, bfloat16 are)"),
                ))
            }
        };
        let mismatch =
            |got: usize| Problem::new(&loc, format!("holds {got} values but its dims {:?} need {n}", self.dims));
        if let Some(raw) = self.raw_data {
            if raw.len() != n.saturating_mul(width) || n.checked_mul(width).is_none() {
                return Err(mismatch(raw.len() / width));
            }
            let v = raw
                .chunks_exact(width)
                .map(|c| match self.data_type {
                    DT_FLOAT => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    DT_DOUBLE => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                    DT_FLOAT16 => half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64(),
                    _ => half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64(),
                })
                .collect();
            return Ok(v);
        }
        let want = match self.data_type {
            DT_FLOAT => TENSOR_FLOAT_DATA,
            DT_DOUBLE => TENSOR_DOUBLE_DATA,
            _ => TENSOR_INT32_DATA,
        };
        let mut out = Vec::new();
        for f in self.typed_data.iter().filter(|f| f.number == want) {
            match (f.value, self.data_type) {
                (Value::Fixed32(x), DT_FLOAT) => out.push(f64::from(f32::from_bits(x))),
                (Value::Fixed64(x), DT_DOUBLE) => out.push(f64::from_bits(x)),
                (Value::Bytes(b), DT_FLOAT) => {
                    if b.len() % 4 != 0 {
                        return Err(Problem::new(&loc, "float_data length is not a multiple of 4"));
                    }
                    out.extend(b.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))));
                }
                (Value::Bytes(b), DT_DOUBLE) => {
                    if b.len() % 8 != 0 {
                        return Err(Problem::new(&loc, "double_data length is not a multiple of 8"));
                    }
                    out.extend(
                        b.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
                    );
                }
                (_, DT_FLOAT16 | DT_BFLOAT16) => {
                    let mut bits = Vec::new();
                    wire::repeated_varints(f, &mut bits).map_err(|e| Problem::new(&loc, format!("int32_data: {e}")))?;
                    for b in bits {
                        let b = b as u16;
                        out.push(if self.data_type == DT_FLOAT16 {
                            half::f16::from_bits(b).to_f64()
                        } else {
                            half::bf16::from_bits(b).to_f64()
                        });
                    }
                }
                _ => return Err(Problem::new(&loc, format!("field {} has the wrong wire type", f.number))),
            }
            if out.len() > n {
                return Err(mismatch(out.len()));
            }
        }
        if out.len() != n {
            return Err(mismatch(out.len()));
        }
        Ok(out)
    }
}

/// Encodes a tensor with `raw_data` in `data_type` (FLOAT, DOUBLE, FLOAT16 or BFLOAT16).
pub(crate) fn encode_tensor(name: &str, dims: &[usize], data_type: i64, values: &[f64]) -> Vec<u8> {
    let mut b = Vec::new();
    for &d in dims {
        wire::put_uint(&mut b, TENSOR_DIMS, d as u64);
    }
    wire::put_uint(&mut b, TENSOR_DATA_TYPE, data_type as u64);
    wire::put_bytes(&mut b, TENSOR_NAME, name.as_bytes());
    let mut raw = Vec::with_capacity(values.len() * 4);
    for &v in values {
        match data_type {
            DT_DOUBLE => raw.extend_from_slice(&v.to_le_bytes()),
            DT_FLOAT16 => raw.extend_from_slice(&half::f16::from_f64(v).to_bits().to_le_bytes()),
            DT_BFLOAT16 => raw.extend_from_slice(&half::bf16::from_f64(v).to_bits().to_le_bytes()),
            _ => raw.extend_from_slice(&(v as f32).to_le_bytes()),
        }
    }
    wire::put_bytes(&mut b, TENSOR_RAW_DATA, &raw);
    b
}

/// A graph input/output/value_info: name and, for a tensor type, the static dims (`None` for a
/// symbolic or missing dimension).
pub(crate) fn value_info(b: &[u8], what: &str) -> PResult<(String, Option<Vec<Option<i64>>>)> {
    let loc = format!("graph {what}");
    let fields = wire::parse(b).map_err(|e| Problem::wire(&loc, e))?;
    let mut name = String::new();
    let mut shape = None;
    for f in &fields {
        match f.number {
            VALUE_INFO_NAME => name = utf8(expect_bytes(f, &loc, "name")?, &loc, "name")?.to_string(),
            VALUE_INFO_TYPE => {
                // Shapes are only read for size inference: malformed ones are ignored, not fatal.
                shape = tensor_shape(expect_bytes(f, &loc, "type")?);
            }
            _ => {}
        }
    }
    Ok((name, shape))
}

/// A `StringStringEntryProto`'s key (field 1) and value (field 2).
fn string_entry<'a>(b: &'a [u8], loc: &str) -> PResult<(&'a str, &'a str)> {
    let fields = wire::parse(b).map_err(|e| Problem::wire(loc, e))?;
    let (mut key, mut value) = ("", "");
    for f in &fields {
        match f.number {
            1 => key = utf8(expect_bytes(f, loc, "external_data key")?, loc, "external_data key")?,
            2 => value = utf8(expect_bytes(f, loc, "external_data value")?, loc, "external_data value")?,
            _ => {}
        }
    }
    Ok((key, value))
}

/// A `ValueInfoProto` declaring tensor `name` of element type `data_type` and static `dims`.
pub(crate) fn encode_value_info(name: &str, data_type: i64, dims: &[i64]) -> Vec<u8> {
    encode_tensor_info(name, data_type, Some(dims))
}

/// A `ValueInfoProto` of a tensor of `data_type` without a shape (the runtime's to infer).
pub(crate) fn encode_output(name: &str, data_type: i64) -> Vec<u8> {
    encode_tensor_info(name, data_type, None)
}

fn encode_tensor_info(name: &str, data_type: i64, dims: Option<&[i64]>) -> Vec<u8> {
    let mut tensor = Vec::new();
    wire::put_uint(&mut tensor, TENSOR_TYPE_ELEM, data_type as u64);
    if let Some(dims) = dims {
        let mut shape = Vec::new();
        for &d in dims {
            let mut dim = Vec::new();
            wire::put_uint(&mut dim, DIM_VALUE, d as u64);
            wire::put_bytes(&mut shape, SHAPE_DIM, &dim);
        }
        wire::put_bytes(&mut tensor, TENSOR_TYPE_SHAPE, &shape);
    }
    let mut ty = Vec::new();
    wire::put_bytes(&mut ty, TYPE_TENSOR, &tensor);
    let mut out = Vec::new();
    wire::put_bytes(&mut out, VALUE_INFO_NAME, name.as_bytes());
    wire::put_bytes(&mut out, VALUE_INFO_TYPE, &ty);
    out
}

fn sub(b: &[u8], number: u32) -> Option<&[u8]> {
    wire::parse(b).ok()?.iter().rev().find(|f| f.number == number).and_then(|f| f.bytes())
}

fn tensor_shape(type_proto: &[u8]) -> Option<Vec<Option<i64>>> {
    let tensor = sub(type_proto, TYPE_TENSOR)?;
    let shape = sub(tensor, TENSOR_TYPE_SHAPE)?;
    let mut dims = Vec::new();
    for f in wire::parse(shape).ok()?.iter().filter(|f| f.number == SHAPE_DIM) {
        let d = wire::parse(f.bytes()?).ok()?;
        dims.push(d.iter().rev().find(|g| g.number == DIM_VALUE).and_then(|g| g.varint()).map(|v| v as i64));
    }
    Some(dims)
}

/// Adds every name a graph (and its subgraphs) mentions to `names`: node inputs, outputs and
/// names, initializer names, inputs, outputs and value_infos.
pub(crate) fn collect_names(graph: &[u8], names: &mut std::collections::HashSet<String>, depth: usize) -> PResult<()> {
    if depth > MAX_DEPTH {
        return Err(Problem::new("graph", format!("subgraphs nested more than {MAX_DEPTH} deep")));
    }
    let fields = wire::parse(graph).map_err(|e| Problem::wire("graph", e))?;
    for (i, f) in fields.iter().enumerate() {
        let Some(b) = f.bytes() else { continue };
        match f.number {
            GRAPH_NODE => {
                let n = Node::parse(b, i)?;
                names.extend(n.inputs.iter().chain(&n.outputs).map(|s| s.to_string()));
                names.insert(n.name.to_string());
                for a in &n.attrs {
                    for g in &a.graphs {
                        collect_names(g, names, depth + 1)?;
                    }
                }
            }
            GRAPH_INITIALIZER => {
                names.insert(Tensor::parse(b, i)?.name.to_string());
            }
            GRAPH_SPARSE_INITIALIZER => {
                // SparseTensorProto: values (1) and indices (2) are TensorProtos with names.
                if let Ok(parts) = wire::parse(b) {
                    for p in parts.iter().filter(|p| p.number == 1 || p.number == 2) {
                        if let Some(t) = p.bytes().and_then(|t| Tensor::parse(t, i).ok()) {
                            names.insert(t.name.to_string());
                        }
                    }
                }
            }
            GRAPH_INPUT | GRAPH_OUTPUT | GRAPH_VALUE_INFO => {
                names.insert(value_info(b, "value")?.0);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every node input name used anywhere inside the subgraphs of `node` (outer-scope references).
pub(crate) fn subgraph_inputs(
    node: &Node<'_>,
    out: &mut std::collections::HashSet<String>,
    depth: usize,
) -> PResult<()> {
    if depth > MAX_DEPTH {
        return Err(Problem::new("graph", format!("subgraphs nested more than {MAX_DEPTH} deep")));
    }
    for a in &node.attrs {
        for g in &a.graphs {
            let fields = wire::parse(g).map_err(|e| Problem::wire("subgraph", e))?;
            for (i, f) in fields.iter().enumerate() {
                if let (GRAPH_NODE, Some(b)) = (f.number, f.bytes()) {
                    let n = Node::parse(b, i)?;
                    out.extend(n.inputs.iter().map(|s| s.to_string()));
                    subgraph_inputs(&n, out, depth + 1)?;
                }
                if let (GRAPH_OUTPUT, Some(b)) = (f.number, f.bytes()) {
                    out.insert(value_info(b, "output")?.0);
                }
            }
        }
    }
    Ok(())
}
