//! The reference convolution: the plain loop nest. Slow on purpose, obviously right.

use super::Tensor4;
use crate::decompose::{DepthwiseR, Pointwise};
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::weights::Conv2dWeights;

/// Direct 2-D convolution (cross-correlation, as in PyTorch and ONNX) with stride, per-side
/// zero padding, dilation, groups and bias.
///
/// ```
/// use dac::{Conv2dWeights, exec::{conv2d, Tensor4}};
/// // A 2x2 box filter over a 3x3 image.
/// let layer = Conv2dWeights::new(vec![1.0f64; 4], [1, 1, 2, 2])?;
/// let x = Tensor4::new((1..=9).map(f64::from).collect(), [1, 1, 3, 3])?;
/// let y = conv2d(&x, &layer)?;
/// assert_eq!(y.as_slice(), &[12.0, 16.0, 24.0, 28.0]);
/// # Ok::<(), dac::Error>(())
/// ```
///
/// # Errors
/// [`Error::ChannelMismatch`] when the input's channels differ from the layer's;
/// [`Error::EmptyOutput`] when the input is too small for the dilated kernel.
pub fn conv2d<T: Real>(input: &Tensor4<T>, layer: &Conv2dWeights<T>) -> Result<Tensor4<T>> {
    let shape = layer.shape();
    let [_, _, height, width] = input.dims();
    let out_dims = output_dims(input, layer)?;
    let [batch, _, out_h, out_w] = out_dims;
    let geometry = layer.geometry();
    let (ng, cg) = (shape.out_per_group(), shape.in_per_group());
    let mut out = Tensor4::zeros(out_dims)?;
    let data = out.as_mut_slice();
    let mut idx = 0;
    for b in 0..batch {
        for o in 0..shape.out_channels {
            let group = o / ng;
            let bias = layer.bias().map_or(T::zero(), |bias| bias[o]);
            for oy in 0..out_h {
                for ox in 0..out_w {
                    let mut acc = bias;
                    for ic in 0..cg {
                        let c = group * cg + ic;
                        for ky in 0..shape.kh {
                            let (s, d, p) = (geometry.stride.0, geometry.dilation.0, geometry.padding.top);
                            let Some(y) = source(oy, ky, s, d, p, height) else { continue };
                            for kx in 0..shape.kw {
                                let (s, d, p) = (geometry.stride.1, geometry.dilation.1, geometry.padding.left);
                                let Some(x) = source(ox, kx, s, d, p, width) else { continue };
                                acc += input.get(b, c, y, x) * layer.at(o, ic, ky, kx);
                            }
                        }
                    }
                    data[idx] = acc;
                    idx += 1;
                }
            }
        }
    }
    Ok(out)
}

/// The input coordinate output position `out` reads at kernel tap `tap` along one axis (of
/// `len` input pixels, with that axis's stride, dilation and leading padding); `None` in the
/// padding.
pub(crate) fn source(out: usize, tap: usize, stride: usize, dilation: usize, pad: usize, len: usize) -> Option<usize> {
    (out * stride + tap * dilation).checked_sub(pad).filter(|&i| i < len)
}

/// The output shape of `layer` on `input`, validated: the checks every executor shares.
pub(crate) fn output_dims<T: Real>(input: &Tensor4<T>, layer: &Conv2dWeights<T>) -> Result<[usize; 4]> {
    let shape = layer.shape();
    let [batch, channels, height, width] = input.dims();
    if channels != shape.in_channels {
        return Err(Error::ChannelMismatch {
            layer: layer.name().to_string(),
            expected: shape.in_channels,
            actual: channels,
        });
    }
    let (oh, ow) = layer.output_size(height, width)?;
    Ok([batch, shape.out_channels, oh, ow])
}

/// Runs the depthwise half.
///
/// # Errors
/// As [`conv2d`].
pub fn depthwise<T: Real>(input: &Tensor4<T>, layer: &DepthwiseR<T>) -> Result<Tensor4<T>> {
    conv2d(input, layer.conv())
}

/// Runs the pointwise half.
///
/// # Errors
/// As [`conv2d`].
pub fn pointwise<T: Real>(input: &Tensor4<T>, layer: &Pointwise<T>) -> Result<Tensor4<T>> {
    conv2d(input, layer.conv())
}

/// Runs the pair: depthwise, then pointwise, nothing in between.
///
/// # Errors
/// As [`conv2d`].
pub fn pair<T: Real>(
    input: &Tensor4<T>,
    depthwise_layer: &DepthwiseR<T>,
    pointwise_layer: &Pointwise<T>,
) -> Result<Tensor4<T>> {
    pointwise(&depthwise(input, depthwise_layer)?, pointwise_layer)
}
