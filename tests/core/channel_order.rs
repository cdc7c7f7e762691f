//! A hand-worked case that pins the channel order of both layers.
//!
//! Two input channels, two outputs, 1x2 kernels (so `kh·kw = 2` and full rank is 2):
//!
//! ```text
//! M_0 = W[:, 0, 0, :] = [[2, 0],      M_1 = W[:, 1, 0, :] = [[0, 3],
//!                        [0, 1]]                             [1, 0]]
//! ```
//! `M_0` has singular values 2, 1 with right vectors e0, e1; `M_1` has 3, 1 with e1, e0.
//! So depthwise channel `c·r + j` must be (up to sign) e0, e1, e1, e0, and the rank-one terms
//! `pw[:, c·r + j] ⊗ dw[c·r + j]` (sign-free) must be
//! `[[2,0],[0,0]]`, `[[0,0],[0,1]]`, `[[0,3],[0,0]]`, `[[0,0],[1,0]]`.

use dac::exec::{self, Tensor4};
use dac::{decompose_with, svd::NalgebraSvd, Conv2dWeights, Options, Split};

fn layer() -> Conv2dWeights<f64> {
    // OIHW [2, 2, 1, 2]: W[n][c][0][t].
    let w = vec![
        2.0, 0.0, /* n0 c0 */ 0.0, 3.0, /* n0 c1 */
        0.0, 1.0, /* n1 c0 */ 1.0, 0.0, /* n1 c1 */
    ];
    Conv2dWeights::builder(w, [2, 2, 1, 2]).bias(vec![0.5, -0.5]).build().unwrap()
}

#[test]
fn channel_order_matches_the_hand_computation() {
    let layer = layer();
    for split in [Split::Pointwise, Split::SquareRoot, Split::Depthwise] {
        let d = decompose_with(&layer, &Options::new(2).split(split), &NalgebraSvd::default()).unwrap();
        let dw = d.depthwise.conv();
        let pw = d.pointwise.conv();
        assert_eq!(dw.dims(), [4, 1, 1, 2]);
        assert_eq!(pw.dims(), [2, 4, 1, 1]);
        assert_eq!(pw.bias(), Some(&[0.5, -0.5][..]));
        // Singular values per channel.
        assert!((d.report.spectrum.channel(0)[0] - 2.0).abs() < 1e-12);
        assert!((d.report.spectrum.channel(0)[1] - 1.0).abs() < 1e-12);
        assert!((d.report.spectrum.channel(1)[0] - 3.0).abs() < 1e-12);
        assert!((d.report.spectrum.channel(1)[1] - 1.0).abs() < 1e-12);
        // Rank-one terms, indexed by depthwise channel c·r + j.
        let expected =
            [[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]], [[0.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]];
        for (k, term) in expected.iter().enumerate() {
            for (n, row) in term.iter().enumerate() {
                for (t, want) in row.iter().enumerate() {
                    let got = pw.weight()[n * 4 + k] * dw.weight()[k * 2 + t];
                    assert!((got - want).abs() < 1e-12, "{split:?}: term {k} [{n}][{t}] = {got}");
                }
            }
        }
        // Which tap each depthwise kernel uses: e0, e1, e1, e0.
        let taps: Vec<usize> =
            (0..4).map(|k| if dw.weight()[k * 2].abs() > dw.weight()[k * 2 + 1].abs() { 0 } else { 1 }).collect();
        assert_eq!(taps, [0, 1, 1, 0], "{split:?}");
    }
}

#[test]
fn hand_worked_outputs() {
    // Input: 1 image, channel 0 = [1, 2, 3], channel 1 = [10, 20, 30] (height 1).
    let x = Tensor4::new(vec![1.0, 2.0, 3.0, 10.0, 20.0, 30.0], [1, 2, 1, 3]).unwrap();
    let layer = layer();
    // out[0][x] = 2·c0[x] + 3·c1[x+1] + 0.5 ; out[1][x] = c0[x+1] + c1[x] − 0.5
    let expected = [2.0 + 60.0 + 0.5, 4.0 + 90.0 + 0.5, 2.0 + 10.0 - 0.5, 3.0 + 20.0 - 0.5];
    let dense = exec::conv2d(&x, &layer).unwrap();
    assert_eq!(dense.dims(), [1, 2, 1, 2]);
    assert_eq!(dense.as_slice(), &expected);
    let d = decompose_with(&layer, &Options::new(2), &NalgebraSvd::default()).unwrap();
    let pair = exec::pair(&x, &d.depthwise, &d.pointwise).unwrap();
    for (a, b) in pair.as_slice().iter().zip(expected) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn reference_executor_stride_padding_dilation_by_hand() {
    // 1 channel 4x4 input 1..16, 2x2 kernel of ones, stride 2, dilation (1, 2), padding
    // top 1, bottom 0, left 0, right 1.
    let x = Tensor4::new((1..=16).map(f64::from).collect(), [1, 1, 4, 4]).unwrap();
    let layer = Conv2dWeights::builder(vec![1.0; 4], [1, 1, 2, 2])
        .stride(2, 2)
        .dilation(1, 2)
        .padding(dac::Padding { top: 1, bottom: 0, left: 0, right: 1 })
        .build()
        .unwrap();
    // Padded height 5, effective kernel 2 -> out_h = (5-2)/2+1 = 2; padded width 5, effective 3 -> 2.
    // out[0][0]: rows -1,0 (row -1 is padding), cols 0,2 -> x[0][0]+x[0][2] = 1+3 = 4
    // out[0][1]: rows -1,0, cols 2,4 (col 4 padding) -> x[0][2] = 3
    // out[1][0]: rows 1,2, cols 0,2 -> 5+7+9+11 = 32
    // out[1][1]: rows 1,2, cols 2 -> 7+11 = 18
    let y = exec::conv2d(&x, &layer).unwrap();
    assert_eq!(y.dims(), [1, 1, 2, 2]);
    assert_eq!(y.as_slice(), &[4.0, 3.0, 32.0, 18.0]);
}
