//! The shipped reference networks load, and the Rust forward pass of `examples/paper` gives the
//! training script's predictions image for image on all 10,000 test images.

use crate::support::net::{self, Dataset, Net, Pair};
use crate::support::seeded;
use dac::exec::Tensor4;
use dac::{Conv2dWeights, Padding};

fn check(stem: &str) {
    let root = net::repo_root();
    let model = Net::load(&root.join("models").join(stem)).unwrap();
    let data = Dataset::load_test(&root.join("data/fashion-mnist")).unwrap();
    assert_eq!(data.len(), 10_000);
    let batches = net::batches(&data, 100).unwrap();
    let (correct, preds) = net::evaluate(&model, &batches, 0, net::DENSE, &data.labels).unwrap();
    let subset_correct = (0..1000).filter(|&i| preds[i] == data.labels[i]).count();
    let recorded = model.meta["subset_correct_first_1000"].as_u64().unwrap() as usize;
    assert_eq!(subset_correct, recorded, "{stem}: correct count on the first 1000 images");
    let expected = std::fs::read(root.join("models").join(format!("{stem}.preds"))).unwrap();
    assert_eq!(expected.len(), 10_000);
    let differ: Vec<usize> = (0..10_000).filter(|&i| expected[i] != preds[i]).collect();
    assert!(differ.is_empty(), "{stem}: predictions differ on images {differ:?}");
    let script_correct = expected.iter().zip(&data.labels).filter(|(p, l)| p == l).count();
    assert_eq!(correct, script_correct, "{stem}: accuracy on all 10,000 images");
    assert_eq!(correct as u64, model.meta["test_correct"].as_u64().unwrap(), "{stem}: the recorded accuracy");
}

#[test]
fn vgg_matches_training_script_on_all_test_images() {
    check("fmnist_vgg");
}

#[test]
fn alt_matches_training_script_on_all_test_images() {
    check("fmnist_alt");
}

/// The example's executor path (`dac::exec::fast`) agrees with the reference executor on strided, padded,
/// dilated and grouped layers, dense and decomposed.
#[test]
fn gemm_path_matches_reference() {
    let cases = [
        ([8, 4, 3, 3], 1, (1, 1), Padding::uniform(1), (1, 1)),
        ([12, 2, 5, 5], 3, (2, 2), Padding::uniform(2), (1, 1)),
        ([6, 3, 3, 3], 2, (2, 1), Padding { top: 0, bottom: 1, left: 1, right: 0 }, (1, 2)),
    ];
    for (k, (dims, groups, stride, padding, dilation)) in cases.into_iter().enumerate() {
        let n = dims.iter().product::<usize>();
        let w: Vec<f32> = seeded(k as u64, n);
        let layer = Conv2dWeights::builder(w, dims)
            .groups(groups)
            .stride(stride.0, stride.1)
            .dilation(dilation.0, dilation.1)
            .padding(padding)
            .bias((0..dims[0]).map(|i| i as f32 * 0.1).collect())
            .build()
            .unwrap();
        let c = dims[1] * groups;
        let x = Tensor4::new(seeded(100 + k as u64, 3 * c * 9 * 11), [3, c, 9, 11]).unwrap();
        let want = net::conv_reference(&x, &layer).unwrap();
        let got = net::conv(&x, &layer).unwrap();
        assert!(want.max_abs_diff(&got).unwrap() <= 1e-5 * want.max_abs().max(1.0), "case {k}");
        let (depthwise, pointwise) = dac::decompose(&layer, 2).unwrap();
        let want = dac::exec::pair(&x, &depthwise, &pointwise).unwrap();
        let got = net::conv_pair(&x, &Pair { depthwise, pointwise }).unwrap();
        assert!(want.max_abs_diff(&got).unwrap() <= 1e-5 * want.max_abs().max(1.0), "pair, case {k}");
    }
}
