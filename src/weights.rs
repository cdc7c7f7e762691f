//! Convolution weights and geometry, validated once at construction.
//!
//! A [`Conv2dWeights`] can only be built through [`Conv2dWeights::new`] or
//! [`Conv2dWeightsBuilder::build`], both of which check every invariant the rest of the crate
//! relies on. After that, decomposition and execution never fail because of a malformed layer.

use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::storage::Storage;

/// Zero padding on each side of the input, in pixels.
///
/// Per-side values make the asymmetric "same" padding that exporters produce (for example
/// TensorFlow's `SAME` with an even kernel, or ONNX `pads` of `[0, 0, 1, 1]`) representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Padding {
    /// Rows added above the input.
    pub top: usize,
    /// Rows added below the input.
    pub bottom: usize,
    /// Columns added left of the input.
    pub left: usize,
    /// Columns added right of the input.
    pub right: usize,
}

impl Padding {
    /// The same padding on all four sides.
    pub const fn uniform(p: usize) -> Self {
        Self { top: p, bottom: p, left: p, right: p }
    }

    /// Symmetric padding: `h` rows above and below, `w` columns left and right.
    pub const fn symmetric(h: usize, w: usize) -> Self {
        Self { top: h, bottom: h, left: w, right: w }
    }

    /// "Same" padding of a `kh x kw` kernel at stride 1, dilation 1 (the odd row and column at
    /// the bottom and right, as PyTorch pads).
    pub(crate) const fn same(kh: usize, kw: usize) -> Self {
        Self { top: kh.saturating_sub(1) / 2, bottom: kh / 2, left: kw.saturating_sub(1) / 2, right: kw / 2 }
    }
}

/// Stride, dilation, padding and groups of a 2-D convolution.
///
/// Pairs are `(height, width)`. The default is the plain convolution: stride 1, dilation 1,
/// no padding, one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Step between output positions, `(h, w)`.
    pub stride: (usize, usize),
    /// Spacing between kernel taps, `(h, w)`.
    pub dilation: (usize, usize),
    /// Zero padding per side.
    pub padding: Padding,
    /// Number of channel groups; both channel counts must be divisible by it.
    pub groups: usize,
}

impl Default for Geometry {
    fn default() -> Self {
        Self { stride: (1, 1), dilation: (1, 1), padding: Padding::default(), groups: 1 }
    }
}

impl Geometry {
    /// Output height and width for an input of `height x width` and a `kh x kw` kernel.
    ///
    /// # Errors
    /// [`Error::EmptyOutput`] (naming `layer`) when the padded input is smaller than the dilated
    /// kernel; [`Error::ZeroSize`] for a zero kernel size, stride or dilation;
    /// [`Error::Overflow`] for sizes that overflow.
    pub fn output_size(
        &self,
        layer: &str,
        (kh, kw): (usize, usize),
        (height, width): (usize, usize),
    ) -> Result<(usize, usize)> {
        let overflow = || Error::Overflow {
            layer: layer.to_string(),
            what: "output size",
            detail: format!("input {height}x{width}, kernel {kh}x{kw}, {self:?}"),
        };
        for (v, what) in [
            (kh, "kernel height"),
            (kw, "kernel width"),
            (self.stride.0, "stride (h)"),
            (self.stride.1, "stride (w)"),
            (self.dilation.0, "dilation (h)"),
            (self.dilation.1, "dilation (w)"),
        ] {
            if v == 0 {
                return Err(Error::ZeroSize { layer: layer.to_string(), what });
            }
        }
        let eff_h = (kh - 1).checked_mul(self.dilation.0).and_then(|v| v.checked_add(1));
        let eff_w = (kw - 1).checked_mul(self.dilation.1).and_then(|v| v.checked_add(1));
        let (eff_h, eff_w) = (eff_h.ok_or_else(overflow)?, eff_w.ok_or_else(overflow)?);
        let pad_h = height
            .checked_add(self.padding.top)
            .and_then(|v| v.checked_add(self.padding.bottom))
            .ok_or_else(overflow)?;
        let pad_w = width
            .checked_add(self.padding.left)
            .and_then(|v| v.checked_add(self.padding.right))
            .ok_or_else(overflow)?;
        if pad_h < eff_h || pad_w < eff_w || height == 0 || width == 0 {
            return Err(Error::EmptyOutput {
                layer: layer.to_string(),
                height,
                width,
                kernel_h: eff_h,
                kernel_w: eff_w,
            });
        }
        Ok(((pad_h - eff_h) / self.stride.0 + 1, (pad_w - eff_w) / self.stride.1 + 1))
    }
}

/// The shape of a convolution, without its data: what the cost model and rank policies need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvShape {
    /// Output channels `N`.
    pub out_channels: usize,
    /// Input channels `C` (all groups together).
    pub in_channels: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Channel groups.
    pub groups: usize,
}

impl ConvShape {
    /// Output channels per group, `N / groups`.
    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Input channels per group, `C / groups` (the weight's second dimension).
    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    /// Kernel taps, `kh * kw`.
    pub fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// The largest decomposition rank, `min(N / groups, kh * kw)`; at this rank the pair is exact.
    pub fn max_rank(&self) -> usize {
        self.out_per_group().min(self.taps())
    }
}

/// A trained 2-D convolution: OIHW weight, optional bias, geometry and a name for messages.
///
/// The weight has shape `[out, in / groups, kh, kw]` and is stored row-major (OIHW), exactly
/// as PyTorch and ONNX store it.
///
/// ```
/// use dac::{Conv2dWeights, Padding};
/// let layer = Conv2dWeights::builder(vec![0.5f32; 8 * 4 * 3 * 3], [8, 4, 3, 3])
///     .name("conv1")
///     .bias(vec![0.0; 8])
///     .padding(Padding::uniform(1))
///     .build()?;
/// assert_eq!(layer.shape().max_rank(), 8);
/// # Ok::<(), dac::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dWeights<T> {
    name: String,
    weight: Storage<T>,
    dims: [usize; 4],
    bias: Option<Vec<T>>,
    geometry: Geometry,
}

/// Builder for [`Conv2dWeights`]; see [`Conv2dWeights::builder`]. Nothing is checked until
/// [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use = "call .build() to validate and obtain the layer"]
pub struct Conv2dWeightsBuilder<T> {
    name: String,
    weight: Storage<T>,
    dims: [usize; 4],
    bias: Option<Vec<T>>,
    geometry: Geometry,
    /// `false` only inside the crate, for a caller that proves the weight finite itself (see
    /// [`defer_weight_finiteness`](Self::defer_weight_finiteness)).
    check_weight_finite: bool,
}

impl<T: Real> Conv2dWeightsBuilder<T> {
    /// The layer's name, used in every error message about it (default `"conv"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// A bias of one value per output channel.
    pub fn bias(mut self, bias: Vec<T>) -> Self {
        self.bias = Some(bias);
        self
    }
    /// An optional bias.
    pub fn maybe_bias(mut self, bias: Option<Vec<T>>) -> Self {
        self.bias = bias;
        self
    }
    /// Channel groups (default 1).
    pub fn groups(mut self, groups: usize) -> Self {
        self.geometry.groups = groups;
        self
    }
    /// Stride `(h, w)` (default `(1, 1)`).
    pub fn stride(mut self, h: usize, w: usize) -> Self {
        self.geometry.stride = (h, w);
        self
    }
    /// Dilation `(h, w)` (default `(1, 1)`).
    pub fn dilation(mut self, h: usize, w: usize) -> Self {
        self.geometry.dilation = (h, w);
        self
    }
    /// Zero padding per side (default none).
    pub fn padding(mut self, padding: Padding) -> Self {
        self.geometry.padding = padding;
        self
    }
    /// Replaces the whole geometry at once.
    pub fn geometry(mut self, geometry: Geometry) -> Self {
        self.geometry = geometry;
        self
    }

    /// Skips the scan of the weight for NaN and infinities in [`build`](Self::build): only for a
    /// caller that proves the weight finite before anything else reads it, or discards the
    /// layer (the converter does, through `GramSvd`'s non-finite Gram check, see
    /// `io::factor_loaded`). The bias is still checked.
    pub(crate) fn defer_weight_finiteness(mut self) -> Self {
        self.check_weight_finite = false;
        self
    }

    /// Validates everything and returns the layer.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for a zero dimension, stride, dilation or group count;
    /// [`Error::Overflow`] when the element count overflows; [`Error::LengthMismatch`] when the
    /// weight or bias length disagrees with the shape; [`Error::InvalidGroups`] when `groups` does
    /// not divide the output channels; [`Error::NonFinite`] for a NaN or infinite value.
    pub fn build(self) -> Result<Conv2dWeights<T>> {
        let Self { name, weight, dims, bias, geometry, check_weight_finite } = self;
        let zero = |what| Err(Error::ZeroSize { layer: name.clone(), what });
        for (d, what) in dims.iter().zip(["out channels", "in channels per group", "kernel height", "kernel width"]) {
            if *d == 0 {
                return zero(what);
            }
        }
        for (v, what) in [
            (geometry.stride.0, "stride (h)"),
            (geometry.stride.1, "stride (w)"),
            (geometry.dilation.0, "dilation (h)"),
            (geometry.dilation.1, "dilation (w)"),
            (geometry.groups, "groups"),
        ] {
            if v == 0 {
                return zero(what);
            }
        }
        let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| Error::Overflow {
            layer: name.clone(),
            what: "weight element count",
            detail: format!("shape {dims:?}"),
        })?;
        let in_channels = dims[1].checked_mul(geometry.groups).ok_or_else(|| Error::Overflow {
            layer: name.clone(),
            what: "input channel count",
            detail: format!("{} per group x {} groups", dims[1], geometry.groups),
        })?;
        if weight.as_slice().len() != expected {
            return Err(Error::LengthMismatch {
                layer: name,
                what: "weight",
                shape: dims.to_vec(),
                expected,
                actual: weight.as_slice().len(),
            });
        }
        if dims[0] % geometry.groups != 0 {
            return Err(Error::InvalidGroups {
                layer: name,
                groups: geometry.groups,
                in_channels,
                out_channels: dims[0],
            });
        }
        if check_weight_finite {
            check_finite(&name, "weight", weight.as_slice())?;
        }
        if let Some(b) = &bias {
            if b.len() != dims[0] {
                return Err(Error::LengthMismatch {
                    layer: name,
                    what: "bias",
                    shape: vec![dims[0]],
                    expected: dims[0],
                    actual: b.len(),
                });
            }
            check_finite(&name, "bias", b)?;
        }
        Ok(Conv2dWeights { name, weight, dims, bias, geometry })
    }
}

/// Returns [`Error::NonFinite`] naming the first NaN or infinite element of `data`.
pub(crate) fn check_finite<T: Real>(layer: &str, what: &'static str, data: &[T]) -> Result<()> {
    // Fast path: a branch-free `&` over fixed-size blocks vectorises (a `position` scan stops
    // to branch on every element, which made it a visible share of converting a checkpoint).
    let block_ok = |block: &[T]| block.iter().fold(true, |ok, v| ok & v.is_finite());
    // Large weights are scanned in parallel: the scan is memory-bound and one thread does not
    // saturate the memory system.
    let ok = if data.len() >= 1 << 18 {
        use rayon::prelude::*;
        data.par_chunks(1 << 16).all(|chunk| chunk.chunks(4096).all(block_ok))
    } else {
        data.chunks(4096).all(block_ok)
    };
    if ok {
        return Ok(());
    }
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => {
            Err(Error::NonFinite { layer: layer.to_string(), what, index, value: data[index].to_f64_exact() })
        }
    }
}

impl<T: Real> Conv2dWeights<T> {
    /// A plain convolution (stride 1, no padding, one group, no bias) from an OIHW weight.
    ///
    /// # Errors
    /// As [`Conv2dWeightsBuilder::build`].
    pub fn new(weight: Vec<T>, dims: [usize; 4]) -> Result<Self> {
        Self::builder(weight, dims).build()
    }

    /// Starts a builder from an OIHW weight of shape `[out, in / groups, kh, kw]`.
    pub fn builder(weight: Vec<T>, dims: [usize; 4]) -> Conv2dWeightsBuilder<T> {
        Self::builder_from(Storage::Owned(weight), dims)
    }

    /// Starts a builder whose weight is `weight`, owned or viewed in place.
    pub(crate) fn builder_from(weight: Storage<T>, dims: [usize; 4]) -> Conv2dWeightsBuilder<T> {
        Conv2dWeightsBuilder {
            name: "conv".to_string(),
            weight,
            dims,
            bias: None,
            geometry: Geometry::default(),
            check_weight_finite: true,
        }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The OIHW weight, row-major.
    pub fn weight(&self) -> &[T] {
        self.weight.as_slice()
    }
    /// The weight's shape `[out, in / groups, kh, kw]`.
    pub fn dims(&self) -> [usize; 4] {
        self.dims
    }
    /// The bias, if any.
    pub fn bias(&self) -> Option<&[T]> {
        self.bias.as_deref()
    }
    /// Stride, dilation, padding and groups.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }
    /// Channel counts, kernel size and groups.
    pub fn shape(&self) -> ConvShape {
        ConvShape {
            out_channels: self.dims[0],
            in_channels: self.dims[1] * self.geometry.groups,
            kh: self.dims[2],
            kw: self.dims[3],
            groups: self.geometry.groups,
        }
    }
    /// Output height and width for an input of `height x width`.
    ///
    /// # Errors
    /// [`Error::EmptyOutput`] when the input is too small for the dilated kernel.
    pub fn output_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        self.geometry.output_size(&self.name, (self.dims[2], self.dims[3]), (height, width))
    }
    /// Consumes the layer, returning `(weight, bias)`.
    pub fn into_parts(self) -> (Vec<T>, Option<Vec<T>>) {
        (self.weight.into_vec(), self.bias)
    }

    /// The weight's vector if the layer owns it (`None` for a weight viewed in place in a
    /// mapped file), for reuse as a buffer.
    #[cfg(feature = "safetensors")]
    pub(crate) fn into_weight_buffer(self) -> Option<Vec<T>> {
        self.weight.into_owned()
    }

    /// The weight element `W[o, i, y, x]` (`i` counted within the group).
    #[inline]
    pub(crate) fn at(&self, o: usize, i: usize, y: usize, x: usize) -> T {
        let [_, ci, kh, kw] = self.dims;
        self.weight.as_slice()[((o * ci + i) * kh + y) * kw + x]
    }
}
