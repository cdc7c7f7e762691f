//! The crate's one error type.
//!
//! Every fallible public function returns [`Result<T>`](crate::Result). Messages name the layer
//! (or tensor) and the offending value, so that a failure deep inside a model conversion can be
//! traced to its source from the message alone.

/// Shorthand for `std::result::Result<T, dac::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `dac`.
///
/// The enum is `#[non_exhaustive]`: new failure modes (for example from new file formats) may be
/// added in minor releases, so match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer's element count does not match the shape it was declared with.
    #[error("layer `{layer}`: {what} has {actual} elements but its shape {shape:?} needs {expected}")]
    LengthMismatch {
        /// Layer or tensor name.
        layer: String,
        /// Which buffer (`"weight"`, `"bias"`, `"input"`).
        what: &'static str,
        /// The declared shape.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements supplied.
        actual: usize,
    },

    /// A size that must be positive is zero.
    #[error("layer `{layer}`: {what} is 0; it must be at least 1")]
    ZeroSize {
        /// Layer or tensor name.
        layer: String,
        /// Which size (`"out channels"`, `"stride (h)"`, ...).
        what: &'static str,
    },

    /// `groups` does not divide both channel counts.
    #[error(
        "layer `{layer}`: groups = {groups} must divide both the input channels ({in_channels}) \
         and the output channels ({out_channels})"
    )]
    InvalidGroups {
        /// Layer name.
        layer: String,
        /// The requested group count.
        groups: usize,
        /// Total input channels (`groups * weight.shape[1]`).
        in_channels: usize,
        /// Total output channels.
        out_channels: usize,
    },

    /// A size computation would overflow `usize` / `u64`.
    #[error("layer `{layer}`: {what} overflows ({detail})")]
    Overflow {
        /// Layer name.
        layer: String,
        /// What was being computed.
        what: &'static str,
        /// The factors involved.
        detail: String,
    },

    /// A weight, bias or input element is NaN or infinite.
    #[error("layer `{layer}`: {what}[{index}] = {value} is not finite")]
    NonFinite {
        /// Layer or tensor name.
        layer: String,
        /// Which buffer.
        what: &'static str,
        /// Flat index of the first offending element.
        index: usize,
        /// The offending value (as `f64`).
        value: f64,
    },

    /// A decomposition rank outside `1..=max`.
    #[error(
        "layer `{layer}`: rank {rank} is out of range; valid ranks are 1..={max} (min(out channels per group, kh*kw))"
    )]
    InvalidRank {
        /// Layer name.
        layer: String,
        /// The requested rank.
        rank: usize,
        /// The largest valid rank for this layer.
        max: usize,
    },

    /// A parameter value is outside its domain (energy fraction, speed-up target, ...).
    #[error("{context}: {what} = {value} is invalid: {expected}")]
    InvalidParameter {
        /// Where the parameter was used (a layer name or `"plan"`).
        context: String,
        /// The parameter's name.
        what: &'static str,
        /// The offending value.
        value: f64,
        /// What would have been valid.
        expected: &'static str,
    },

    /// An SVD backend failed (for example it did not converge within its iteration limit).
    #[error("layer `{layer}`: SVD of input channel {channel} failed: {reason}")]
    Svd {
        /// Layer name.
        layer: String,
        /// Input channel whose matrix failed.
        channel: usize,
        /// The backend's explanation.
        reason: String,
    },

    /// A tensor fed to the executor has the wrong number of channels.
    #[error("layer `{layer}`: input has {actual} channels, expected {expected}")]
    ChannelMismatch {
        /// Layer name.
        layer: String,
        /// Channels the layer expects.
        expected: usize,
        /// Channels the input has.
        actual: usize,
    },

    /// The input is too small for the (dilated) kernel: the output would be empty.
    #[error(
        "layer `{layer}`: input {height}x{width} with padding is smaller than the dilated kernel \
         {kernel_h}x{kernel_w}; the output would be empty"
    )]
    EmptyOutput {
        /// Layer name.
        layer: String,
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
        /// Effective (dilated) kernel height.
        kernel_h: usize,
        /// Effective (dilated) kernel width.
        kernel_w: usize,
    },

    /// Reading or writing a file failed at the operating-system level.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        /// The file (or directory) involved.
        path: std::path::PathBuf,
        /// What was being done (`"open"`, `"write"`, ...).
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A checkpoint file is malformed or holds something `dac` cannot convert.
    #[error("{}: {}: {reason}", file.display(), tensor_label(tensor))]
    Format {
        /// The file.
        file: std::path::PathBuf,
        /// The tensor at fault, or `None` when the header as a whole is (shown as `header`).
        tensor: Option<String>,
        /// What is wrong, with the offending value.
        reason: String,
    },

    /// An error about one layer of a file, with the file's name added.
    #[error("{}: {source}", file.display())]
    InFile {
        /// The file.
        file: std::path::PathBuf,
        /// The error, which names the layer.
        source: Box<Error>,
    },

    /// A layer-name pattern given by the user matches no layer of the file.
    #[error("{}: {option} pattern `{pattern}` matches no {} layer (layers: {available})", file.display(), layer_kind(option))]
    NoMatch {
        /// The file.
        file: std::path::PathBuf,
        /// The [`ConvertOptions`](crate::convert::ConvertOptions) setter the pattern came from
        /// (`"include"`, `"exclude"`, `"rank_for"`, `"groups"`, `"layer_input"`, ...;
        /// `"linear_positions"` names linear layers).
        option: &'static str,
        /// The pattern.
        pattern: String,
        /// The layers that exist, abbreviated.
        available: String,
    },

    /// A layer may be converted with any scheme (`auto`), but its rank is not planned: only the
    /// whole-network planner chooses a scheme.
    #[error(
        "layer `{layer}`: scheme `auto` lets the whole-network planner choose the scheme; give a target \
         (speedup or parameter budget) without a fixed rank for it, or name one scheme"
    )]
    SchemeNeedsPlanner {
        /// The layer.
        layer: String,
    },

    /// Input moments were given for the planner's score but none for a layer it plans.
    #[error(
        "layer `{layer}`: the input moments have no entry for it; the planner scores every planned layer \
         alike, so give one for each (scripts/synthetic_moments.py writes one per convolution)"
    )]
    MissingInputMoments {
        /// The layer.
        layer: String,
    },

    /// A whole-network target needs a layer's input size, and it is neither inferred from the
    /// file nor given.
    #[error(
        "{}: input size unknown ({reason}); a whole-network target counts every layer at its real \
         size: give the network's input size (ConvertOptions::input_size) or this layer's (layer_input)",
        site_label(layer)
    )]
    UnknownInputSize {
        /// The layer (or node) name.
        layer: String,
        /// Why it is unknown: where shape inference stopped, or that no size was given.
        reason: String,
    },

    /// No plan reaches the planner's target and
    /// [`ConvertOptions::require_target`](crate::convert::ConvertOptions::require_target) asks for
    /// it: nothing is written.
    #[error(
        "plan: target {target} cannot be reached; the cheapest plan reaches {reached:.2}x (at most {max:.2}x \
         possible); nothing was written (without ConvertOptions::require_target the cheapest plan is written)"
    )]
    TargetNotMet {
        /// The target asked for.
        target: crate::plan::Target,
        /// What the cheapest plan reaches, in the target's measure (the modeled speed-up for a
        /// time target, else the MAC reduction).
        reached: f64,
        /// The most any plan can reach, in the same measure.
        max: f64,
    },

    /// The output file exists and replacing it was not allowed.
    #[error("{}: output file already exists; set ConvertOptions::force to replace it", path.display())]
    OutputExists {
        /// The output path.
        path: std::path::PathBuf,
    },

    /// The output path names the input file (the same path, or the same file through a link).
    #[error("{}: output is the input file `{}`; write to another path", output.display(), input.display())]
    OutputIsInput {
        /// The input path.
        input: std::path::PathBuf,
        /// The output path.
        output: std::path::PathBuf,
    },

    /// A time-model table ([`TimeModel::from_json`](crate::time::TimeModel::from_json)) is
    /// malformed or lacks an entry the model needs.
    #[error("time table `{table}`: {reason}")]
    TimeTable {
        /// The table's name (a path, or `onnxruntime-x86_64` for the shipped one).
        table: String,
        /// What is wrong, with the offending value.
        reason: String,
    },

    /// A runtime ([`dac::runtime`](crate::runtime)) could not be loaded, or could not load or
    /// run a model.
    #[error("runtime {runtime}: {reason}")]
    Runtime {
        /// The runtime (its library's path while loading it, else its version).
        runtime: String,
        /// What failed, with the offending value.
        reason: String,
    },

    /// A `--speedup` target was not reached in the runtime it was measured in, and
    /// [`ConvertOptions::require_target`](crate::ConvertOptions::require_target) asked for it:
    /// nothing is written.
    #[error(
        "measured in {runtime}: target {target}x not reached; the plan that would be written runs {reached:.2}x \
         faster (its second timing); nothing was written"
    )]
    MeasuredTargetNotMet {
        /// The runtime measured in.
        runtime: String,
        /// The speed-up asked for.
        target: f64,
        /// The measured speed-up of the plan that would have been written (its second timing,
        /// [`Measured::claim`](crate::runtime::Measured::claim)).
        reached: f64,
    },

    /// An ONNX model is malformed or holds something `dac` cannot rewrite.
    #[error("{}: {location}: {reason}", file.display())]
    Onnx {
        /// The file (`<memory>` for bytes).
        file: std::path::PathBuf,
        /// Where: `node `name``, `initializer `name``, `graph`, `model`.
        location: String,
        /// What is wrong, with the offending value.
        reason: String,
    },
}

/// `layer `name``, or a graph node's own label (`node `name``, `node #i (op)`) as it is.
fn site_label(layer: &str) -> String {
    if layer.starts_with("node ") {
        layer.to_string()
    } else {
        format!("layer `{layer}`")
    }
}

/// `tensor `name`` or `header`, for [`Error::Format`] messages.
fn tensor_label(tensor: &Option<String>) -> String {
    match tensor {
        Some(name) => format!("tensor `{name}`"),
        None => "header".to_string(),
    }
}

/// The kind of layer the patterns of `option` name: linear layers for
/// [`linear_positions`](crate::convert::ConvertOptions::linear_positions), else convolutions.
fn layer_kind(option: &str) -> &'static str {
    if option == "linear_positions" {
        "linear"
    } else {
        "convolution"
    }
}
