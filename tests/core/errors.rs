//! One test per core error variant: the variant, and a message that names the value.

use dac::exec::{self, Tensor4};
use dac::svd::{SvdBackend, SvdFailure};
use dac::{decompose, decompose_with, Conv2dWeights, Error, Factorization, Options, Padding, Rank};

fn ok_layer() -> Conv2dWeights<f32> {
    Conv2dWeights::builder(vec![0.25; 4 * 2 * 9], [4, 2, 3, 3]).name("blocks.3.conv").build().unwrap()
}

#[test]
fn length_mismatch_names_layer_and_counts() {
    let e = Conv2dWeights::builder(vec![0.0f32; 71], [4, 2, 3, 3]).name("features.7").build().unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { expected: 72, actual: 71, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("features.7") && msg.contains("71") && msg.contains("72"), "{msg}");

    let e = Conv2dWeights::builder(vec![0.0f32; 72], [4, 2, 3, 3]).name("f").bias(vec![0.0; 3]).build().unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "bias", expected: 4, actual: 3, .. }), "{e:?}");
    assert!(e.to_string().contains("bias has 3 elements"), "{e}");

    let e = Tensor4::new(vec![0.0f32; 5], [1, 1, 2, 3]).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { expected: 6, actual: 5, .. }), "{e:?}");
}

#[test]
fn zero_size_names_the_dimension() {
    let e = Conv2dWeights::<f64>::new(vec![], [4, 0, 3, 3]).unwrap_err();
    assert!(matches!(e, Error::ZeroSize { what: "in channels per group", .. }), "{e:?}");
    let e = Conv2dWeights::builder(vec![0.0f64; 9], [1, 1, 3, 3]).name("s").stride(1, 0).build().unwrap_err();
    assert!(matches!(e, Error::ZeroSize { what: "stride (w)", .. }), "{e:?}");
    assert!(e.to_string().contains("`s`: stride (w) is 0"), "{e}");
}

#[test]
fn invalid_groups_names_the_counts() {
    let e = Conv2dWeights::builder(vec![0.0f32; 6 * 2 * 9], [6, 2, 3, 3]).name("g").groups(4).build().unwrap_err();
    assert!(matches!(e, Error::InvalidGroups { groups: 4, in_channels: 8, out_channels: 6, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("groups = 4") && msg.contains("(6)") && msg.contains("(8)"), "{msg}");
}

#[test]
fn overflow_is_reported_not_panicked() {
    let huge = usize::MAX / 2;
    let e = Conv2dWeights::<f32>::new(vec![], [huge, huge, 3, 3]).unwrap_err();
    assert!(matches!(e, Error::Overflow { what: "weight element count", .. }), "{e:?}");
    assert!(e.to_string().contains(&huge.to_string()), "{e}");
    let e = Conv2dWeights::<f32>::builder(vec![0.0; 9], [1, 1, 3, 3]).dilation(usize::MAX, 1).build().unwrap();
    let e = e.output_size(8, 8).unwrap_err();
    assert!(matches!(e, Error::Overflow { what: "output size", .. }), "{e:?}");
}

#[test]
fn non_finite_names_index_and_value() {
    let mut w = vec![0.0f32; 72];
    w[17] = f32::NAN;
    let e = Conv2dWeights::builder(w, [4, 2, 3, 3]).name("nan_layer").build().unwrap_err();
    assert!(matches!(e, Error::NonFinite { index: 17, what: "weight", .. }), "{e:?}");
    assert!(e.to_string().contains("nan_layer") && e.to_string().contains("weight[17] = NaN"), "{e}");
    let e = Conv2dWeights::builder(vec![0.0f64; 9], [1, 1, 3, 3]).bias(vec![f64::INFINITY]).build().unwrap_err();
    assert!(e.to_string().contains("bias[0] = inf"), "{e}");
}

#[test]
fn invalid_rank_states_the_valid_range() {
    let layer = ok_layer();
    for rank in [0, 5] {
        let e = decompose(&layer, rank).unwrap_err();
        assert!(matches!(e, Error::InvalidRank { max: 4, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("rank {rank}")) && msg.contains("1..=4") && msg.contains("blocks.3.conv"),
            "{msg}"
        );
    }
    let spectrum = Factorization::compute(&layer, &dac::svd::NalgebraSvd::default()).unwrap().spectrum();
    assert!(matches!(Rank::Fixed(9).choose("x", &spectrum, true), Err(Error::InvalidRank { rank: 9, .. })));
}

#[test]
fn invalid_policy_parameters_name_the_value() {
    let spectrum = Factorization::compute(&ok_layer(), &dac::svd::NalgebraSvd::default()).unwrap().spectrum();
    for f in [0.0, 1.5, f64::NAN] {
        let e = Rank::Energy(f).choose("conv9", &spectrum, false).unwrap_err();
        assert!(matches!(e, Error::InvalidParameter { what: "energy", .. }), "{e:?}");
        assert!(e.to_string().contains("conv9") && e.to_string().contains(&f.to_string()), "{e}");
    }
    let e = Rank::Speedup(-2.0).choose("conv9", &spectrum, false).unwrap_err();
    assert!(e.to_string().contains("speed-up = -2"), "{e}");
}

/// A backend that always gives up, to exercise the error path.
struct Failing;
impl SvdBackend<f32> for Failing {
    fn right_factors(&self, _: &[f32], _: usize, _: usize, _: &mut [f32], _: &mut [f32]) -> Result<(), SvdFailure> {
        Err(SvdFailure::new("gave up after 0 sweeps"))
    }
    fn name(&self) -> &'static str {
        "failing"
    }
}

#[test]
fn svd_failure_names_layer_and_channel() {
    let e = decompose_with(&ok_layer(), &Options::new(1), &Failing).unwrap_err();
    assert!(matches!(e, Error::Svd { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("blocks.3.conv") && msg.contains("input channel") && msg.contains("gave up after 0 sweeps"),
        "{msg}"
    );
}

#[test]
fn channel_mismatch_names_counts() {
    let x = Tensor4::new(vec![0.0f32; 3 * 25], [1, 3, 5, 5]).unwrap();
    let e = exec::conv2d(&x, &ok_layer()).unwrap_err();
    assert!(matches!(e, Error::ChannelMismatch { expected: 2, actual: 3, .. }), "{e:?}");
    assert!(e.to_string().contains("input has 3 channels, expected 2"), "{e}");
}

#[test]
fn empty_output_names_the_sizes() {
    let layer = Conv2dWeights::builder(vec![1.0f32; 9], [1, 1, 3, 3]).name("tiny").dilation(2, 2).build().unwrap();
    let x = Tensor4::new(vec![0.0f32; 16], [1, 1, 4, 4]).unwrap();
    let e = exec::conv2d(&x, &layer).unwrap_err();
    assert!(matches!(e, Error::EmptyOutput { kernel_h: 5, kernel_w: 5, .. }), "{e:?}");
    assert!(e.to_string().contains("4x4") && e.to_string().contains("5x5"), "{e}");
    // Padding makes the same input valid.
    let padded =
        Conv2dWeights::builder(vec![1.0f32; 9], [1, 1, 3, 3]).dilation(2, 2).padding(Padding::uniform(1)).build();
    assert_eq!(exec::conv2d(&x, &padded.unwrap()).unwrap().dims(), [1, 1, 2, 2]);
}

#[test]
fn errors_are_send_sync_and_std_errors() {
    fn assert_traits<E: std::error::Error + Send + Sync + 'static>() {}
    assert_traits::<Error>();
}

#[test]
fn pair_halves_from_plain_convolutions_are_validated() {
    let (dw, pw) = decompose(&ok_layer(), 2).unwrap();
    let rebuilt = dac::DepthwiseR::from_conv(dw.conv().clone(), 2).unwrap();
    assert_eq!(rebuilt, dw);
    assert_eq!(dac::Pointwise::from_conv(pw.conv().clone()).unwrap(), pw);
    let e = dac::DepthwiseR::from_conv(dw.conv().clone(), 3).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter { what: "depthwise rank", .. }), "{e:?}");
    assert!(e.to_string().contains("depthwise rank = 3"), "{e}");
    let e = dac::Pointwise::from_conv(ok_layer()).unwrap_err();
    assert!(e.to_string().contains("blocks.3.conv") && e.to_string().contains("= 9"), "{e}");
}
