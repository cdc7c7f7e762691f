//! safetensors fixtures: encoders, the reference writer, the small networks and the bad inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::values;

/// Encodes f32 values as little-endian bytes of `dtype` ("F32", "F64", "F16", "BF16").
pub fn encode(v: &[f32], dtype: &str) -> Vec<u8> {
    match dtype {
        "F32" => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        "F64" => v.iter().flat_map(|x| f64::from(*x).to_le_bytes()).collect(),
        "F16" => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
        "BF16" => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
        other => panic!("dtype {other}"),
    }
}

/// Decodes little-endian bytes of `dtype` into f64 values.
pub fn decode(b: &[u8], dtype: &str) -> Vec<f64> {
    match dtype {
        "F32" => b.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect(),
        "F64" => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        "F16" => b.chunks_exact(2).map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f64()).collect(),
        "BF16" => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f64()).collect(),
        other => panic!("dtype {other}"),
    }
}

/// One tensor to write: name, dtype name, shape, raw bytes.
pub struct T {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// A float tensor of `shape` with seeded values.
pub fn float(name: &str, dtype: &str, shape: &[usize], seed: u64) -> T {
    let n = shape.iter().product();
    T { name: name.into(), dtype: dtype.into(), shape: shape.to_vec(), data: encode(&values(seed, n), dtype) }
}

fn st_dtype(name: &str) -> safetensors::Dtype {
    serde_json::from_value(serde_json::Value::String(name.to_string())).unwrap()
}

/// Writes `tensors` with the safetensors crate (the reference writer).
pub fn write(path: &Path, tensors: &[T], metadata: &[(&str, &str)]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                safetensors::tensor::TensorView::new(st_dtype(&t.dtype), t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    let meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let bytes = safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(meta)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Writes a file with a literal header and data section (for malformed inputs).
pub fn write_raw(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// A small network: a 3x3 conv with bias, a batch norm (with an I64 counter), a 3x3 conv without
/// bias, a grouped 3x3 conv (groups 2) with bias, a 1x1 conv and a linear layer.
pub fn small_net(dtype: &str) -> Vec<T> {
    vec![
        float("conv1.weight", dtype, &[8, 3, 3, 3], 1),
        float("conv1.bias", dtype, &[8], 2),
        float("bn1.weight", "F32", &[8], 3),
        T {
            name: "bn1.num_batches_tracked".into(),
            dtype: "I64".into(),
            shape: vec![],
            data: 7i64.to_le_bytes().to_vec(),
        },
        float("conv2.weight", dtype, &[16, 8, 3, 3], 4),
        float("conv3.weight", dtype, &[8, 8, 3, 3], 5),
        float("conv3.bias", dtype, &[8], 6),
        float("down.weight", dtype, &[16, 8, 1, 1], 7),
        float("fc.weight", "F32", &[10, 16], 8),
        float("fc.bias", "F32", &[10], 9),
    ]
}

fn f32s(n: usize) -> Vec<u8> {
    encode(&values(5, n), "F32")
}

/// Writes the bad (or, for any other name, a good) input `name` into `dir`; returns its path.
pub fn make(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(format!("{name}.safetensors"));
    match name {
        "truncated_data" => {
            write(&p, &small_net("F32"), &[]);
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() - 100]).unwrap();
        }
        "truncated_header" => std::fs::write(&p, [16u8, 0, 0]).unwrap(),
        "header_past_end" => {
            let mut b = 1000u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            std::fs::write(&p, b).unwrap();
        }
        "overlap" => write_raw(
            &p,
            r#"{"a.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b.weight":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
            &f32s(6),
        ),
        "past_end" => {
            write_raw(&p, r#"{"conv.weight":{"dtype":"F32","shape":[2,1,3,3],"data_offsets":[0,72]}}"#, &f32s(9))
        }
        "not_json" => write_raw(&p, r#"{"conv.weight": {"dtype": "F32", "#, &[]),
        "gap" => write_raw(
            &p,
            r#"{"a.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b.weight":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#,
            &f32s(5),
        ),
        "trailing" => {
            write_raw(&p, r#"{"conv.weight":{"dtype":"F32","shape":[2,1,3,3],"data_offsets":[0,72]}}"#, &f32s(19))
        }
        "not_utf8" => {
            let mut b = 4u64.to_le_bytes().to_vec();
            b.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
            std::fs::write(&p, b).unwrap();
        }
        "not_object" => write_raw(&p, r#"[1, 2, 3]"#, &[]),
        "metadata_not_object" => write_raw(&p, r#"{"__metadata__":["x"]}"#, &[]),
        "metadata_not_string" => write_raw(&p, r#"{"__metadata__":{"format":7}}"#, &[]),
        "header_limit" => {
            let mut b = 200_000_000u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            std::fs::write(&p, b).unwrap();
        }
        "shape_overflow" => write_raw(
            &p,
            r#"{"conv.weight":{"dtype":"F32","shape":[4294967296,4294967296,3,3],"data_offsets":[0,8]}}"#,
            &f32s(2),
        ),
        "byte_count" => write_raw(&p, r#"{"conv.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#, &f32s(2)),
        "bad_record" => {
            write(&p, &[float("conv.weight", "F32", &[4, 2, 3, 3], 1)], &[("dac.layer.conv", r#"{"rank": "two"}"#)])
        }
        "unknown_dtype" => write_raw(&p, r#"{"conv.weight":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}}"#, &[0, 0]),
        "int_conv" => write(
            &p,
            &[T { name: "conv.weight".into(), dtype: "I32".into(), shape: vec![2, 1, 3, 3], data: vec![0; 72] }],
            &[],
        ),
        "bias_length" => {
            write(&p, &[float("conv.weight", "F32", &[4, 2, 3, 3], 1), float("conv.bias", "F32", &[3], 2)], &[])
        }
        "nan" => {
            let mut v = values(1, 4 * 2 * 9);
            v[5] = f32::NAN;
            let t =
                T { name: "conv.weight".into(), dtype: "F32".into(), shape: vec![4, 2, 3, 3], data: encode(&v, "F32") };
            write(&p, &[t], &[]);
        }
        _ => write(&p, &[float("conv.weight", "F32", &[4, 2, 3, 3], 1), float("conv.bias", "F32", &[4], 2)], &[]),
    }
    p
}

/// A VGG-like stack: four 3x3 convolutions at shrinking sizes and a linear layer.
pub fn stack(dir: &Path) -> PathBuf {
    let p = dir.join("stack.safetensors");
    write(
        &p,
        &[
            float("c0.weight", "F32", &[16, 3, 3, 3], 11),
            float("c0.bias", "F32", &[16], 12),
            float("c1.weight", "F32", &[32, 16, 3, 3], 13),
            float("c2.weight", "F32", &[64, 32, 3, 3], 14),
            float("c2.bias", "F32", &[64], 15),
            float("c3.weight", "F32", &[64, 64, 3, 3], 16),
            float("fc.weight", "F32", &[10, 64], 17),
            float("fc.bias", "F32", &[10], 18),
        ],
        &[],
    );
    p
}
