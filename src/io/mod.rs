//! Converting checkpoint files: safetensors in, safetensors out (feature `safetensors`, on by
//! default).
//!
//! [`convert_file`] reads a checkpoint written by PyTorch, candle or burn (memory-mapped), finds
//! every convolution — a 4-D tensor `<layer>.weight` in OIHW order, with `<layer>.bias` if
//! present, in F32, F64, F16 or BF16 — and replaces the selected ones by
//!
//! | tensor | shape | layer to load it into |
//! |---|---|---|
//! | `<layer>.depthwise.weight` | `[C·r, 1, kh, kw]` | `Conv2d(C, C·r, (kh, kw), groups=C, bias=False)` with the original stride, padding and dilation |
//! | `<layer>.pointwise.weight` | `[N, C·r/g, 1, 1]` | `Conv2d(C·r, N, 1, groups=g)` |
//! | `<layer>.pointwise.bias` | `[N]` | (only when the layer had a bias) |
//!
//! Every other tensor is copied bit for bit, in the input's order; the converted layer's tensors
//! take the place of its weight. The file's `__metadata__` keeps the input's entries and adds
//! `dac.format` (`"1"`), `dac.version` (the crate version) and, per converted layer,
//! `dac.layer.<layer>` = a JSON object
//! `{"rank":r,"groups":g,"split":"sqrt","in_channels":C,"out_channels":N,"kernel":[kh,kw],"bias":true}`,
//! plus `"fit":"correlated=ρ"` for a pair made with a correlated [`Fit`](crate::Fit)
//! ([`ConvertOptions::fit`]; see [`LayerRecord`] and [`read_records`]).
//!
//! Computation is in f32 (or f64, [`Precision::F64`]); converted tensors are written in the
//! weight's dtype unless [`ConvertOptions::output_dtype`] says otherwise. A checkpoint carries
//! no stride, padding or groups: the conversion needs no geometry, `groups` comes from the user
//! (default 1), and MAC counts assume stride 1 and "same" padding on an input of
//! [`ConvertOptions::layer_input`] or [`ConvertOptions::input_size`] (or count one output
//! position).
//!
//! The decisions (which layers, which ranks, the report) are the conversion pipeline's,
//! [`crate::convert`], shared with the ONNX rewrite; this module reads and writes the file.
//!
//! The output is written to a temporary file in the target directory and renamed into place
//! when everything succeeded; on any error nothing is left behind.
//!
//! ```no_run
//! use dac::{io::{convert_file, ConvertOptions}, Rank};
//! let options = ConvertOptions::new(Rank::Energy(0.9)).exclude("features.0").input_size(224, 224);
//! let summary = convert_file("vgg16.safetensors", "vgg16-dac.safetensors", &options)?;
//! println!("MACs {:?} -> {:?}", summary.macs_before(), summary.macs_after());
//! # Ok::<(), dac::Error>(())
//! ```

mod atomic;
mod checkpoint;
mod geometry;
mod inspect;
mod moments;
#[cfg(feature = "onnx")]
pub mod onnx;
pub(crate) mod records;
pub(crate) mod safetensors;

pub use self::checkpoint::ASSUMPTION;
pub use self::geometry::{read_geometry, GeometryFile};
pub use self::inspect::{inspect_file, inspect_model, InspectOptions, Inspection, LayerInfo, OtherConv};
pub use self::moments::{read_input_moments, write_input_moments};
pub use self::records::{read_records, FactorRecord, LayerRecord, FORMAT_VERSION};
pub use crate::convert::{
    ConvertOptions, ConvertedLayer, FloatDtype, LayerGeometry, Precision, SizeSource, SkipReason, SkippedLayer,
    Summary, SvdMethod,
};

use crate::error::Result;
use std::path::Path;

/// What a conversion is doing, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Computing spectra to choose ranks (energy policies and the planner only).
    Analysing,
    /// Writing tensors.
    Writing,
    /// Done.
    Finished,
}

/// A progress report: called before each layer is analysed and each tensor is written.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Progress<'a> {
    /// The current phase.
    pub phase: Phase,
    /// The tensor or layer being processed.
    pub item: &'a str,
    /// Work done so far (bytes of input data in [`Phase::Writing`], layers in
    /// [`Phase::Analysing`]).
    pub done: u64,
    /// Total work of the phase, same unit.
    pub total: u64,
}

/// Converts the checkpoint `input` into `output` with no progress reports. See the
/// [module docs](self) for the output's layout.
///
/// The input is memory-mapped; tensors that are not converted are copied file to file
/// (`copy_file_range` on Linux, as `cp` does), and converted layers are read, factored and
/// written one at a time, so memory stays well below the input's size. A weight stored in the
/// precision computed in (f32 for [`Precision::F32`]) is read in place from the map when its
/// bytes are aligned; any other is decoded into a buffer reused from layer to layer.
///
/// # Errors
/// Any malformed input ([`Error::Format`](crate::Error::Format) naming the file and tensor), a
/// pattern matching no layer ([`Error::NoMatch`](crate::Error::NoMatch)), impossible groups or a
/// planned layer without an input size ([`Error::InFile`](crate::Error::InFile) around the core
/// error), an output that is the input ([`Error::OutputIsInput`](crate::Error::OutputIsInput))
/// or exists without `force` ([`Error::OutputExists`](crate::Error::OutputExists)), and I/O
/// failures ([`Error::Io`](crate::Error::Io)). On error no output file is created or changed.
pub fn convert_file(input: impl AsRef<Path>, output: impl AsRef<Path>, options: &ConvertOptions) -> Result<Summary> {
    convert_file_with(input, output, options, &mut |_| {})
}

/// [`convert_file`] with a progress callback.
///
/// # Errors
/// As [`convert_file`].
pub fn convert_file_with(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Summary> {
    let (input, output) = (input.as_ref(), output.as_ref());
    match options.precision {
        Precision::F32 => checkpoint::convert::<f32>(input, output, options, progress),
        Precision::F64 => checkpoint::convert::<f64>(input, output, options, progress),
    }
}
