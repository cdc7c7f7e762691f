//! The safetensors format: an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{"__metadata__": {string: string}, name: {"dtype", "shape", "data_offsets": [begin, end]}}`),
//! then the data section, tensors little-endian and row-major at their offsets.
//!
//! The header is validated here, tensor by tensor, before anything is trusted, so that every
//! failure names the file and the tensor; the `safetensors` crate then checks the header again
//! as the reference parser.

use crate::error::{Error, Result};
use crate::scalar::Real;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest header accepted (the `safetensors` crate's limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

pub use crate::convert::FloatDtype;

/// One tensor's header entry; offsets are relative to the data section.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) dtype: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) begin: usize,
    pub(crate) end: usize,
}

impl Entry {
    /// The dtype, if it is one of the four float types.
    pub(crate) fn float_dtype(&self) -> Option<FloatDtype> {
        FloatDtype::from_name(&self.dtype)
    }
}

/// A validated safetensors header: where the data starts, the tensors in data order and the
/// `__metadata__` entries.
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) data_start: usize,
    pub(crate) tensors: Vec<Entry>,
    pub(crate) metadata: BTreeMap<String, String>,
}

impl Header {
    /// Parses and validates the header of the file `bytes` (`path` names it in errors): the
    /// length, UTF-8 JSON object, each entry, offsets contiguous from 0 to the end of the data
    /// (no overlap, gap or trailing byte), and the `safetensors` crate's agreement.
    pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        if bytes.len() < 8 {
            let len = bytes.len();
            return Err(format_error(
                path,
                None,
                format!("file is truncated: {len} bytes, but a safetensors file starts with an 8-byte header length"),
            ));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&bytes[..8]);
        let n = u64::from_le_bytes(len_bytes);
        let len = bytes.len() as u64;
        let rest = len - 8;
        if n > MAX_HEADER_BYTES {
            return Err(format_error(path, None, format!("length {n} exceeds the limit of {MAX_HEADER_BYTES}")));
        }
        if n > rest {
            return Err(format_error(
                path,
                None,
                format!(
                    "length {n} runs past the end of the file ({len} bytes): the file is truncated \
                     or not a safetensors file"
                ),
            ));
        }
        let n = n as usize;
        let header =
            std::str::from_utf8(&bytes[8..8 + n]).map_err(|e| format_error(path, None, format!("not UTF-8: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_str(header).map_err(|e| format_error(path, None, format!("not valid JSON: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(format_error(path, None, "not a JSON object"));
        };
        let data_len = bytes.len() - 8 - n;
        let mut metadata = BTreeMap::new();
        let mut tensors = Vec::with_capacity(map.len());
        for (name, v) in map {
            if name == "__metadata__" {
                let serde_json::Value::Object(m) = v else {
                    return Err(format_error(path, None, "`__metadata__` is not a JSON object"));
                };
                for (k, v) in m {
                    let serde_json::Value::String(s) = v else {
                        return Err(format_error(path, None, format!("`__metadata__` entry `{k}` is not a string")));
                    };
                    metadata.insert(k, s);
                }
            } else {
                tensors.push(parse_entry(path, name, &v)?);
            }
        }
        tensors.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));
        check_layout(&tensors, data_len, path)?;
        // The reference parser must agree before anything is converted.
        ::safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| format_error(path, None, format!("rejected by the safetensors parser: {e}")))?;
        Ok(Self { data_start: 8 + n, tensors, metadata })
    }
}

/// Tensors (sorted by offset) tile the data section: each inside it, from byte 0, without
/// overlap or gap, up to its last byte.
fn check_layout(tensors: &[Entry], data_len: usize, path: &Path) -> Result<()> {
    for t in tensors {
        if t.end > data_len {
            return Err(format_error(
                path,
                Some(&t.name),
                format!(
                    "data_offsets [{}, {}] run past the end of the data section ({data_len} bytes): \
                         the file is truncated",
                    t.begin, t.end
                ),
            ));
        }
    }
    let mut expected_begin = 0usize;
    let mut previous: Option<&Entry> = None;
    for t in tensors {
        if t.begin < expected_begin {
            let p = previous.map_or(String::new(), |p| format!(" of tensor `{}` [{}, {}]", p.name, p.begin, p.end));
            return Err(format_error(
                path,
                Some(&t.name),
                format!("data_offsets [{}, {}] overlap the data{p}", t.begin, t.end),
            ));
        }
        if t.begin > expected_begin {
            return Err(format_error(
                path,
                Some(&t.name),
                format!("data starts at byte {} but the previous tensor ends at {expected_begin}: a gap", t.begin),
            ));
        }
        expected_begin = t.end;
        previous = Some(t);
    }
    if expected_begin != data_len {
        return Err(format_error(
            path,
            None,
            format!("tensors end at byte {expected_begin} of a {data_len}-byte data section: trailing bytes"),
        ));
    }
    Ok(())
}

/// An opened, validated, memory-mapped safetensors file.
///
/// Tensors to convert are viewed in place in the map ([`view`](Self::view)) or decoded from it,
/// and their pages released once done with ([`release`](Self::release)); tensors copied
/// unchanged go from file to file in the kernel ([`copy_data`](Self::copy_data)) and never enter
/// this process's memory.
pub(crate) struct Checkpoint {
    pub(crate) path: PathBuf,
    file: File,
    mmap: std::sync::Arc<memmap2::Mmap>,
    data_start: usize,
    /// Tensors in data order (by offset), the order they are written back in.
    pub(crate) tensors: Vec<Entry>,
    /// The `__metadata__` entries.
    pub(crate) metadata: BTreeMap<String, String>,
    /// The input file's permissions, given to the output.
    pub(crate) permissions: Option<std::fs::Permissions>,
}

/// An [`Error::Format`] about `file`.
pub(crate) fn format_error(file: &Path, tensor: Option<&str>, reason: impl Into<String>) -> Error {
    Error::Format { file: file.to_path_buf(), tensor: tensor.map(str::to_string), reason: reason.into() }
}

impl Checkpoint {
    /// Opens and validates `path`.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::Io { path: path.to_path_buf(), action: "open", source: e })?;
        let meta = file.metadata().map_err(|e| Error::Io { path: path.to_path_buf(), action: "stat", source: e })?;
        if meta.is_dir() {
            return Err(format_error(path, None, "is a directory, not a safetensors file"));
        }
        let len = meta.len();
        if len < 8 {
            return Err(format_error(
                path,
                None,
                format!("file is truncated: {len} bytes, but a safetensors file starts with an 8-byte header length"),
            ));
        }
        // SAFETY: the map is read-only; as with any memory-mapped reader, the file must not be
        // truncated by another process while it is being converted.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Io {
            path: path.to_path_buf(),
            action: "memory-map",
            source: e,
        })?;
        let header = Header::parse(&mmap, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            mmap: std::sync::Arc::new(mmap),
            data_start: header.data_start,
            tensors: header.tensors,
            metadata: header.metadata,
            permissions: Some(meta.permissions()),
        })
    }

    /// The raw bytes of tensor `t`.
    pub(crate) fn bytes(&self, t: &Entry) -> &[u8] {
        &self.mmap[self.data_start + t.begin..self.data_start + t.end]
    }

    /// Tensor `t` viewed in place in the map, without a copy, when its dtype is `T`'s and its
    /// bytes can be viewed as `T` (aligned, little-endian target); `None` otherwise (decode it).
    pub(crate) fn view<T: Real>(&self, t: &Entry) -> Option<crate::storage::Storage<T>> {
        if !is_native::<T>(t.float_dtype()?) {
            return None;
        }
        let len = (t.end - t.begin) / std::mem::size_of::<T>();
        crate::storage::Storage::shared(self.mmap.clone(), self.data_start + t.begin, len)
    }

    /// Size of the data section in bytes.
    pub(crate) fn data_len(&self) -> u64 {
        self.tensors.last().map_or(0, |t| t.end as u64)
    }

    /// Tensor `t` as `T` values; `t` must have a float dtype.
    pub(crate) fn read_real<T: Real>(&self, t: &Entry) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.read_real_into(t, &mut out)?;
        Ok(out)
    }

    /// Tensor `t` as `T` values, into `out` (cleared first, its allocation reused); `t` must
    /// have a float dtype.
    pub(crate) fn read_real_into<T: Real>(&self, t: &Entry, out: &mut Vec<T>) -> Result<()> {
        let dtype = t.float_dtype().ok_or_else(|| {
            format_error(
                &self.path,
                Some(&t.name),
                format!("dtype {} is not supported for conversion (supported: F32, F64, F16, BF16)", t.dtype),
            )
        })?;
        decode_into(self.bytes(t), dtype, out);
        Ok(())
    }

    /// Maps tensor `t`'s pages in one call before they are read (`MADV_POPULATE_READ`, Linux
    /// 5.14+), instead of one page fault per 4 KiB page on first touch. Best effort: elsewhere,
    /// or when the kernel refuses, the pages fault in as they are read.
    pub(crate) fn populate(&self, t: &Entry) {
        #[cfg(target_os = "linux")]
        {
            let page = 4096;
            let begin = (self.data_start + t.begin) / page * page;
            let end = (self.data_start + t.end).min(self.mmap.len());
            if end > begin {
                let _ = self.mmap.advise_range(memmap2::Advice::PopulateRead, begin, end - begin);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = t;
    }

    /// Drops this process's mapping of tensor `t`'s pages (they stay in the page cache), so
    /// that data already decoded does not count in the resident set twice. Best effort.
    pub(crate) fn release(&self, t: &Entry) {
        let page = 4096;
        let begin = (self.data_start + t.begin) / page * page;
        let end = (self.data_start + t.end).min(self.mmap.len());
        if end <= begin {
            return;
        }
        // SAFETY: the map is a read-only, shared mapping of a file: MADV_DONTNEED only drops
        // the process's page-table entries; the next access maps the same file pages again
        // from the page cache, so no data is lost or changed. Failure is harmless and ignored.
        #[cfg(unix)]
        let _ = unsafe { self.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, begin, end - begin) };
    }

    /// Byte offset of tensor `t`'s data in the file.
    fn file_offset(&self, begin: usize) -> u64 {
        (self.data_start + begin) as u64
    }

    /// Copies data bytes `begin..end` (offsets into the data section) to the end of `out`,
    /// file to file: on Linux `std::io::copy` uses `copy_file_range`, as `cp` does, so the bytes
    /// never pass through this process's memory.
    pub(crate) fn copy_data(&self, begin: usize, end: usize, out: &mut File, out_path: &Path) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut src = &self.file;
        src.seek(SeekFrom::Start(self.file_offset(begin))).map_err(|e| Error::Io {
            path: self.path.clone(),
            action: "seek in",
            source: e,
        })?;
        let len = (end - begin) as u64;
        let copied = std::io::copy(&mut src.take(len), out).map_err(|e| Error::Io {
            path: out_path.to_path_buf(),
            action: "copy tensor data into",
            source: e,
        })?;
        if copied != len {
            return Err(format_error(
                &self.path,
                None,
                format!("the file shrank while being read: {copied} of {len} bytes copied"),
            ));
        }
        Ok(())
    }
}

fn parse_entry(path: &Path, name: String, v: &serde_json::Value) -> Result<Entry> {
    let bad = |reason: String| format_error(path, Some(&name), reason);
    let serde_json::Value::Object(m) = v else {
        return Err(bad(format!("header entry is not a JSON object: {v}")));
    };
    let dtype = match m.get("dtype") {
        Some(serde_json::Value::String(s)) => s.clone(),
        other => return Err(bad(format!("`dtype` is missing or not a string: {other:?}"))),
    };
    // The safetensors crate's dtype table gives the element size in bits.
    let bits = serde_json::from_value::<::safetensors::Dtype>(serde_json::Value::String(dtype.clone()))
        .map(|d| d.bitsize())
        .map_err(|_| bad(format!("unsupported dtype `{dtype}`")))?;
    let shape = match m.get("shape") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| bad(format!("`shape` {a:?} is not a list of non-negative integers")))?,
        other => return Err(bad(format!("`shape` is missing or not a list: {other:?}"))),
    };
    let offsets = match m.get("data_offsets") {
        Some(serde_json::Value::Array(a)) if a.len() == 2 => {
            a.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect::<Option<Vec<usize>>>()
        }
        _ => None,
    };
    let Some([begin, end]) = offsets.as_deref().map(|o| [o[0], o[1]]) else {
        return Err(bad(format!(
            "`data_offsets` is missing or not two non-negative integers: {:?}",
            m.get("data_offsets")
        )));
    };
    if end < begin {
        return Err(bad(format!("data_offsets [{begin}, {end}] end before they begin")));
    }
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let nbytes = numel.and_then(|n| n.checked_mul(bits)).filter(|b| b % 8 == 0).map(|b| b / 8);
    let Some(nbytes) = nbytes else {
        return Err(bad(format!("shape {shape:?} of {dtype} is not a whole number of bytes or overflows")));
    };
    if end - begin != nbytes {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] hold {} bytes but shape {shape:?} of {dtype} needs {nbytes}",
            end - begin
        )));
    }
    Ok(Entry { name, dtype, shape, begin, end })
}

/// Little-endian `dtype` bytes to `T` values.
#[allow(dead_code)]
pub(crate) fn decode<T: Real>(bytes: &[u8], dtype: FloatDtype) -> Vec<T> {
    let mut out = Vec::new();
    decode_into(bytes, dtype, &mut out);
    out
}

/// Little-endian `dtype` bytes to `T` values, into `out` (cleared first; its capacity is
/// reused).
pub(crate) fn decode_into<T: Real>(bytes: &[u8], dtype: FloatDtype, out: &mut Vec<T>) {
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    let width = dtype.size();
    let len = bytes.len() / width;
    out.clear();
    out.reserve(len);
    // Decoded in parallel chunks straight into the spare capacity (no zero-fill pass first):
    // the copy is memory-bound and one thread does not saturate the memory system.
    let spare = &mut out.spare_capacity_mut()[..len];
    spare.par_chunks_mut(DECODE_CHUNK).zip(bytes.par_chunks(DECODE_CHUNK * width)).for_each(|(dst, src)| {
        fn fill<T>(dst: &mut [MaybeUninit<T>], src: &[u8], width: usize, f: impl Fn(&[u8]) -> T) {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(width)) {
                d.write(f(c));
            }
        }
        // Same type in and out: a plain copy, which the compiler turns into wide loads.
        if let (FloatDtype::F32, Some(dst)) = (dtype, crate::scalar::slice_as_mut::<_, MaybeUninit<f32>>(dst)) {
            return fill(dst, src, 4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        if let (FloatDtype::F64, Some(dst)) = (dtype, crate::scalar::slice_as_mut::<_, MaybeUninit<f64>>(dst)) {
            return fill(dst, src, 8, |c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        match dtype {
            FloatDtype::F32 => {
                fill(dst, src, 4, |c| T::from_f64_lossy(f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
            }
            FloatDtype::F64 => fill(dst, src, 8, |c| {
                T::from_f64_lossy(f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            }),
            FloatDtype::F16 => {
                fill(dst, src, 2, |c| T::from_f64_lossy(half::f16::from_le_bytes([c[0], c[1]]).to_f64()))
            }
            FloatDtype::BF16 => {
                fill(dst, src, 2, |c| T::from_f64_lossy(half::bf16::from_le_bytes([c[0], c[1]]).to_f64()))
            }
        }
    });
    // SAFETY: the loop above wrote every one of the first `len` elements (the chunks of `spare`
    // and of `bytes` pair up exactly: `bytes` holds `len · width` bytes or more).
    unsafe { out.set_len(len) };
}

/// Values decoded per parallel task of [`decode_into`] (1 MiB of f32).
const DECODE_CHUNK: usize = 1 << 18;

/// Values encoded per chunk by [`write_values`]: 1 MiB of F32, enough for `BufWriter` to pass
/// each chunk straight to the file.
const ENCODE_CHUNK: usize = 1 << 18;

/// Writes `values` as little-endian `dtype` bytes, chunk by chunk through `buf` (reused, at
/// most [`ENCODE_CHUNK`] values' worth); `Err(Ok(index))` names the first value that is not
/// finite after rounding (it overflowed the narrower type), `Err(Err(e))` is a write error.
pub(crate) fn write_values<T: Real>(
    values: &[T],
    dtype: FloatDtype,
    buf: &mut Vec<u8>,
    w: &mut impl Write,
) -> std::result::Result<(), std::result::Result<usize, std::io::Error>> {
    if let Some(bytes) = native_bytes(values, dtype) {
        // Every value of the element type itself is written as is; only NaN or infinity (which
        // a decomposition never produces) would be refused.
        if !values.iter().fold(true, |ok, v| ok & v.is_finite()) {
            return Err(Ok(values.iter().position(|v| !v.is_finite()).unwrap_or(0)));
        }
        return w.write_all(bytes).map_err(Err);
    }
    for (ci, chunk) in values.chunks(ENCODE_CHUNK).enumerate() {
        encode(chunk, dtype, buf).map_err(|i| Ok(ci * ENCODE_CHUNK + i))?;
        w.write_all(buf).map_err(Err)?;
    }
    Ok(())
}

/// Whether `dtype`'s little-endian bytes are `T` values as this target stores them: F32 for
/// f32, F64 for f64, on a little-endian target.
fn is_native<T: Real>(dtype: FloatDtype) -> bool {
    cfg!(target_endian = "little")
        && matches!(dtype, FloatDtype::F32 | FloatDtype::F64)
        && std::mem::size_of::<T>() == dtype.size()
}

/// The bytes of `values` when they are already `dtype`'s little-endian encoding (`T` is the
/// dtype's own type, on a little-endian machine).
fn native_bytes<T: Real>(values: &[T], dtype: FloatDtype) -> Option<&[u8]> {
    if !is_native::<T>(dtype) {
        return None;
    }
    // SAFETY: `T` is `f32` or `f64` (sealed `Real`), whose size matches the dtype's (4 or 8
    // bytes, checked above, so F32 pairs with f32 and F64 with f64): plain floats without
    // padding, so every byte is initialised; `u8` has alignment 1, and the length covers
    // exactly the same memory, borrowed for the same lifetime.
    Some(unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) })
}

/// `T` values to little-endian `dtype` bytes; `Err(index)` names the first value that is not
/// finite after rounding (it overflowed the narrower type).
pub(crate) fn encode<T: Real>(values: &[T], dtype: FloatDtype, out: &mut Vec<u8>) -> std::result::Result<(), usize> {
    out.clear();
    out.resize(values.len() * dtype.size(), 0);
    let finite = match dtype {
        FloatDtype::F32 => out.chunks_exact_mut(4).zip(values).fold(true, |ok, (o, v)| {
            let x = v.to_f64_exact() as f32;
            o.copy_from_slice(&x.to_le_bytes());
            ok & x.is_finite()
        }),
        FloatDtype::F64 => out.chunks_exact_mut(8).zip(values).fold(true, |ok, (o, v)| {
            let x = v.to_f64_exact();
            o.copy_from_slice(&x.to_le_bytes());
            ok & x.is_finite()
        }),
        FloatDtype::F16 => out.chunks_exact_mut(2).zip(values).fold(true, |ok, (o, v)| {
            let x = half::f16::from_f64(v.to_f64_exact());
            o.copy_from_slice(&x.to_le_bytes());
            ok & x.is_finite()
        }),
        FloatDtype::BF16 => out.chunks_exact_mut(2).zip(values).fold(true, |ok, (o, v)| {
            let x = half::bf16::from_f64(v.to_f64_exact());
            o.copy_from_slice(&x.to_le_bytes());
            ok & x.is_finite()
        }),
    };
    if finite {
        return Ok(());
    }
    let bad = values.iter().position(|v| match dtype {
        FloatDtype::F32 => !(v.to_f64_exact() as f32).is_finite(),
        FloatDtype::F64 => !v.to_f64_exact().is_finite(),
        FloatDtype::F16 => !half::f16::from_f64(v.to_f64_exact()).is_finite(),
        FloatDtype::BF16 => !half::bf16::from_f64(v.to_f64_exact()).is_finite(),
    });
    Err(bad.unwrap_or(0))
}

/// One tensor of an output header.
#[derive(Debug, Clone)]
pub(crate) struct OutEntry {
    pub(crate) name: String,
    pub(crate) dtype: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) nbytes: usize,
}

/// The complete header block (length prefix + JSON padded with spaces to a multiple of 8),
/// tensors in the given order with consecutive offsets.
pub(crate) fn header_block(metadata: &BTreeMap<String, String>, tensors: &[OutEntry]) -> Vec<u8> {
    let mut json = String::from("{");
    if !metadata.is_empty() {
        json.push_str("\"__metadata__\":");
        json.push_str(
            &serde_json::Value::Object(
                metadata.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect(),
            )
            .to_string(),
        );
    }
    let mut offset = 0usize;
    for (i, t) in tensors.iter().enumerate() {
        if i > 0 || !metadata.is_empty() {
            json.push(',');
        }
        let name = serde_json::Value::String(t.name.clone()).to_string();
        let shape = t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
        json.push_str(&format!(
            "{name}:{{\"dtype\":\"{}\",\"shape\":[{shape}],\"data_offsets\":[{offset},{}]}}",
            t.dtype,
            offset + t.nbytes
        ));
        offset += t.nbytes;
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut block = Vec::with_capacity(8 + json.len());
    block.extend_from_slice(&(json.len() as u64).to_le_bytes());
    block.extend_from_slice(json.as_bytes());
    block
}

/// Writes `bytes`, mapping errors to [`Error::Io`] on `path`.
pub(crate) fn write_all(w: &mut impl Write, bytes: &[u8], path: &Path) -> Result<()> {
    w.write_all(bytes).map_err(|e| Error::Io { path: path.to_path_buf(), action: "write", source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with a 2-byte F16 tensor, then an F32 tensor of `n` values at data offset 2, the
    /// header padded with spaces to `header_len` bytes.
    fn file_with_offset_2(dir: &Path, header_len: usize, n: usize) -> PathBuf {
        let mut header = format!(
            r#"{{"pad":{{"dtype":"F16","shape":[1],"data_offsets":[0,2]}},"w":{{"dtype":"F32","shape":[{n}],"data_offsets":[2,{}]}}}}"#,
            2 + 4 * n
        );
        assert!(header.len() <= header_len);
        header.extend(std::iter::repeat_n(' ', header_len - header.len()));
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend((0..n).flat_map(|i| (i as f32 * 0.5 - 1.0).to_le_bytes()));
        let path = dir.join(format!("h{header_len}.safetensors"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn same_dtype_tensors_are_viewed_in_place_when_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let want: Vec<f32> = (0..5).map(|i| i as f32 * 0.5 - 1.0).collect();
        // Data start 8 + 126 = 134: the weight at file offset 136 (aligned), then 8 + 128 = 136:
        // offset 138 (not aligned for f32).
        for (header_len, aligned) in [(126, true), (128, false)] {
            let ck = Checkpoint::open(&file_with_offset_2(dir.path(), header_len, 5)).unwrap();
            let w = ck.tensors.iter().find(|t| t.name == "w").unwrap();
            let view = ck.view::<f32>(w);
            assert_eq!(view.is_some(), aligned, "header {header_len}");
            if let Some(v) = view {
                assert_eq!(v.as_slice(), &want[..]);
            }
            assert_eq!(ck.read_real::<f32>(w).unwrap(), want, "decoded");
            // Another type is always decoded.
            assert!(ck.view::<f64>(w).is_none());
        }
    }
}
