//! Rewriting ONNX models (feature `onnx`): every selected `Conv` becomes a depthwise `Conv`
//! followed by a 1x1 `Conv`, and nothing else in the file changes.
//!
//! [`rewrite_file`] (or [`rewrite_model`] on bytes) reads a `ModelProto` at the protobuf wire
//! level. Every field of the model outside the graph — IR version, opset imports, producer,
//! metadata, functions, fields this crate does not know — is copied byte for byte; inside the
//! graph every node, initializer, input, output and value_info that the rewrite does not touch is
//! copied byte for byte too, in its original order. A rewrite that converts nothing therefore
//! returns the input bytes (unless the model keeps tensors in external files: those are
//! written inline).
//!
//! A `Conv` (default domain, 2-D) whose weight is an initializer becomes, at rank `r`:
//!
//! | layout | nodes |
//! |---|---|
//! | [`Layout::Fused`] | `Conv(X, Wd)` with `group` = C, `C·r` outputs, the original `strides`, `pads`, `dilations`, `auto_pad`, `kernel_shape`; then `Conv(·, Wp, B)` 1x1 with the original `group` |
//! | [`Layout::Multiplier1`] | (`Split` of X into the `g` groups when `g > 1`), `g·r` depthwise `Conv`s of multiplier 1, one `Concat`, then the 1x1 `Conv` with its input channels permuted to match |
//! | [`Layout::Sum`] | `r` branches, each a depthwise `Conv` of multiplier 1 on all `C` channels (the original geometry) and its 1x1 `Conv` (`C/g` inputs per group to `N`), chained by `Add`s; the first branch's 1x1 carries the bias |
//!
//! Each layer gets the layout the [time model](crate::time) says is fastest, unless
//! [`ConvertOptions::layout`] forces one. The other schemes are chains of plain `Conv`s (spatial
//! SVD `kh x 1` then `1 x kw`; channel SVD `kh x kw` then 1x1; Network Decoupling 1x1, depthwise,
//! grouped 1x1), except Network Decoupling in [`Layout::Sum`]: `T` branches of a 1x1 `Conv` to
//! `N` channels and a depthwise `Conv` (its summing weights folded in), chained by `Add`s.
//!
//! The 1x1 `Conv` produces the original output name and carries the original bias input and the
//! original node's doc string and unknown fields; new tensors, nodes and initializers get fresh
//! names (`<weight stem>.depthwise.weight`, `<weight stem>.pointwise.weight`,
//! `<output>/dac_depthwise`, ... with a numeric suffix on collision) and the new initializers
//! are placed where the original weight was. The original weight initializer is removed when no
//! other node (including subgraphs) and no graph output uses it. A weight given by a top-level
//! `Constant` node (its `value` tensor) is read and replaced the same way, and the `Constant`
//! node removed under the same condition. Weights are written as `raw_data` in the original
//! data type (float, double, float16 or bfloat16); decompositions are
//! computed in f32 (f64 for double weights, or with [`Precision::F64`](crate::convert::Precision::F64)).
//!
//! Left alone and listed in [`Summary::skipped`] with the reason: convolutions whose weight
//! is neither an initializer nor a `Constant` node's tensor (or is also a graph input, so it
//! can be replaced at run time, unless [`ConvertOptions::freeze_input_weights`]), 1-D and 3-D
//! convolutions, 1x1 kernels, layers not selected, and layers whose rank saves nothing.
//!
//! External data: [`rewrite_file`] reads initializers stored in files beside the model
//! (`data_location` EXTERNAL; the `location` must be a relative path inside the model's
//! directory) and writes them inline, so the output is one file; [`rewrite_model`], which has
//! no directory, reports them as an error.
//!
//! Layer names for `include`/`exclude` patterns (globs, `*` and `?`): a pattern selects a `Conv`
//! when it matches the node's name, its weight initializer's name, or that name without a
//! trailing `.weight`. As for checkpoints, a pattern matching no convolution is an error
//! ([`Error::NoMatch`]), and a fixed rank above a layer's maximum leaves it dense.
//!
//! Input moments without data: [`synthetic_moments`] runs the dense model in a
//! [`Forward`](crate::runtime::Forward) runtime on synthetic images and measures every planned
//! layer's input moments, for [`ConvertOptions::input_moments`] (`dac onnx --synthetic-moments`).
//!
//! Sizes: the planner ([`ConvertOptions::planned`]) and the MAC counts need every layer's real
//! size. Shape inference walks the graph from the model inputs' static shapes (a symbolic batch
//! counts as 1; [`ConvertOptions::input_size`] gives symbolic spatial sizes) through the
//! operators real exports use — convolutions, pools, `Pad` with pads computed by
//! `Shape`/`Gather`/`Concat`/`Slice` chains, `Concat`, `Split`, `Reshape`, `Transpose`,
//! `Resize`, reductions, broadcasting element-wise operators, normalisations, `MatMul`,
//! `Gemm` and more. Where it stops (an unknown operator, a size computed from data), it
//! records the node and why; a layer after it is counted only at a size declared with
//! [`ConvertOptions::layer_input`], never at another layer's size. Until every layer is
//! counted the totals are unknown ([`Summary::uncounted`] says why) and a whole-network target
//! is an error ([`Error::UnknownInputSize`]). The totals count every `Conv` (1x1 and depthwise
//! included), `ConvTranspose`, `Gemm` and `MatMul` per image.
//!
//! The decisions (which layers, which ranks, the report) are the conversion pipeline's,
//! [`crate::convert`], shared with checkpoint conversion; this module decodes the graph and
//! encodes the patch.
//!
//! ```no_run
//! use dac::{convert::ConvertOptions, io::onnx::rewrite_file};
//! let report = rewrite_file("net.onnx", "net-dac.onnx", &ConvertOptions::speedup(2.0))?;
//! for c in &report.converted {
//!     println!("{}: rank {}", c.name, c.rank);
//! }
//! # Ok::<(), dac::Error>(())
//! ```

mod discover;
mod elements;
mod external;
mod graph;
mod infer;
pub(crate) mod inspect;
mod layout;
mod moments;
mod ops;
mod proto;
mod reorders;
mod rewrite;
mod shapes;
mod sum;
mod wire;

pub use self::moments::{synthetic_moments, MomentSampling};
pub use crate::convert::Layout;

use crate::convert::{ConvertOptions, Summary};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Rewrites an ONNX model held in memory; returns the new model's bytes and the report.
///
/// # Errors
/// [`Error::Onnx`] naming the node or tensor for a file that is not an ONNX model, truncated or
/// malformed protobuf, initializers stored in external files (use [`rewrite_file`]), a rewritten
/// model above protobuf's 2 GiB limit, a `Conv` whose weight shape
/// disagrees with its attributes or bias, or unsupported weight data types;
/// [`Error::NoMatch`] for a pattern matching no convolution; errors from the decomposition
/// ([`Error::InvalidRank`], ...) name the layer.
pub fn rewrite_model(bytes: &[u8], options: &ConvertOptions) -> Result<(Vec<u8>, Summary)> {
    rewrite::rewrite(bytes, options, Path::new("<memory>"), &external::External::none())
}

/// Reads `input`, rewrites it and writes `output` atomically (a temporary file in the target
/// directory, renamed into place only on success). Never writes over the input.
///
/// # Errors
/// As [`rewrite_model`] (external data is read from the files it names), plus [`Error::Onnx`]
/// for external data that cannot be read or lies outside the model's directory,
/// [`Error::Io`] for file system failures,
/// [`Error::OutputIsInput`] when `output` names the input file and [`Error::OutputExists`] when
/// it exists and [`ConvertOptions::force`] is not set. Nothing is written on error.
pub fn rewrite_file(input: impl AsRef<Path>, output: impl AsRef<Path>, options: &ConvertOptions) -> Result<Summary> {
    let (input, output) = (input.as_ref(), output.as_ref());
    super::atomic::check_output(input, output, options.force)?;
    let (bytes, ext) = read_model(input)?;
    let (out, summary) = rewrite::rewrite(&bytes, options, input, &ext).map_err(|e| in_file(input, e))?;
    write_model(input, output, &out, summary, options.force)
}

/// As [`rewrite_file`], timing the result in `runtime` (see [`crate::runtime`]). For a
/// [`Target::TimeReduction`](crate::plan::Target::TimeReduction) of `X`, plans until the
/// *measured* speed-up reaches `X` ([`runtime::search`](crate::runtime::search)) and writes the
/// plan kept, or the original unchanged where even the fastest plan measured slower than it;
/// for any other policy or target, writes the one plan and reports its measured speed-up. The
/// summary is the written model's.
///
/// # Errors
/// As [`rewrite_file`], plus [`Error::Runtime`] when the runtime cannot load or run a model (a
/// model with external data cannot be timed: the original is passed to the runtime from
/// memory), and [`Error::MeasuredTargetNotMet`] when
/// [`ConvertOptions::require_target`] is set and the written plan's measured speed-up (its
/// second timing, [`Measured::claim`](crate::runtime::Measured::claim)) is below the target.
/// Nothing is written on error.
pub fn rewrite_file_measured(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    options: &ConvertOptions,
    runtime: &mut dyn crate::runtime::Runtime,
) -> Result<(Summary, crate::runtime::Measured)> {
    let (input, output) = (input.as_ref(), output.as_ref());
    super::atomic::check_output(input, output, options.force)?;
    let (bytes, ext) = read_model(input)?;
    if !ext.is_empty() {
        return Err(Error::Runtime {
            runtime: runtime.describe(),
            reason: format!("{}: the model keeps tensors in external files; it cannot be timed", input.display()),
        });
    }
    let target = match options.ranks {
        crate::convert::RankSource::Target(crate::plan::Target::TimeReduction(x)) => Some(x),
        _ => None,
    };
    let plan = |goal: Option<f64>| {
        // A modeled target the search tries may be out of reach; only the measured one counts.
        let mut o = options.clone();
        if let Some(x) = goal {
            o = o.require_target(false);
            o.ranks = crate::convert::RankSource::Target(crate::plan::Target::TimeReduction(x));
        }
        let (bytes, summary) = rewrite::rewrite(&bytes, &o, input, &ext).map_err(|e| in_file(input, e))?;
        Ok(crate::runtime::Rewrite { bytes, summary })
    };
    let (r, measured) = crate::runtime::search(target, &bytes, runtime, plan)?;
    if let (Some(target), Some(false), true) = (target, measured.met(), options.require_target) {
        let reached = measured.speedup();
        return Err(Error::MeasuredTargetNotMet { runtime: measured.runtime, target, reached });
    }
    let summary = write_model(input, output, &r.bytes, r.summary, options.force)?;
    Ok((summary, measured))
}

fn read_model(input: &Path) -> Result<(Vec<u8>, external::External)> {
    let bytes = std::fs::read(input).map_err(|e| Error::Io { path: input.to_path_buf(), action: "read", source: e })?;
    let ext = external::External::load(&bytes, input)?;
    Ok((bytes, ext))
}

/// A conversion error of `input`'s layers, naming the file.
fn in_file(input: &Path, e: Error) -> Error {
    match e {
        Error::Onnx { .. } | Error::Io { .. } | Error::InFile { .. } | Error::NoMatch { .. } => e,
        other => Error::InFile { file: input.to_path_buf(), source: Box::new(other) },
    }
}

/// Writes `out` atomically with the input's permissions; the summary with its output path.
fn write_model(input: &Path, output: &Path, out: &[u8], mut summary: Summary, force: bool) -> Result<Summary> {
    use std::io::Write;
    let mut file = super::atomic::AtomicFile::create(output, force)?;
    file.writer().write_all(out).map_err(|e| Error::Io { path: output.to_path_buf(), action: "write", source: e })?;
    let permissions = std::fs::metadata(input).ok().map(|m| m.permissions());
    file.commit(permissions)?;
    summary.output = output.to_path_buf();
    Ok(summary)
}

/// The fuzz target of the wire reader: parses `bytes` and, up to `depth` levels, every
/// length-delimited field that parses as a message; the number of fields seen.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_wire(bytes: &[u8], depth: usize) -> usize {
    match wire::parse(bytes) {
        Err(_) => 0,
        Ok(fields) => {
            let nested = |f: &wire::Field<'_>| f.bytes().filter(|_| depth > 0).map_or(0, |b| fuzz_wire(b, depth - 1));
            fields.len() + fields.iter().map(nested).sum::<usize>()
        }
    }
}

/// The fuzz target of the model parser.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_model(bytes: &[u8]) -> Result<usize> {
    Ok(graph::Graph::parse(bytes, Path::new("<fuzz>"), &external::External::none())?.nodes.len())
}

/// The fuzz target of shape inference and MAC counting.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_shapes(bytes: &[u8], input_size: Option<(usize, usize)>) -> Result<usize> {
    let ext = external::External::none();
    let g = graph::Graph::parse(bytes, Path::new("<fuzz>"), &ext)?;
    let (shapes, _) = g.shapes(input_size);
    let options = ConvertOptions::speedup(2.0);
    let found = discover::find(&g, &shapes, &options, Path::new("<fuzz>"))?;
    Ok(shapes.facts.len() + found.found.len() + found.uncounted.len())
}

/// An [`Error::Onnx`] about `file`.
pub(crate) fn onnx_error(file: &Path, location: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Onnx { file: PathBuf::from(file), location: location.into(), reason: reason.into() }
}
