//! Geometry declarations for checkpoints (which have none): `ConvertOptions::stride`, `padding`,
//! `dilation` and the JSON sidecar (`read_geometry`), used for MAC counts, planning and
//! `inspect`. Expected MACs are written out here from the architecture, not from the crate.
#![cfg(feature = "safetensors")]

use crate::support::files::{float, stack, write, T};
use dac::io::{convert_file, inspect_file, read_geometry, ConvertOptions, InspectOptions, SizeSource};
use dac::{Error, Padding, Rank};
use std::path::{Path, PathBuf};

/// A ResNet-18 with every width divided by 8 (torchvision's names): `conv1` 7x7 stride 2, four
/// stages of two basic blocks, 1x1 stride-2 downsampling, and `fc`.
fn resnet18_eighth(dir: &Path) -> PathBuf {
    let p = dir.join("resnet18.safetensors");
    let mut t: Vec<T> = vec![float("conv1.weight", "F32", &[8, 3, 7, 7], 1)];
    let widths = [8, 16, 32, 64];
    let mut seed = 2;
    for (stage, &w) in widths.iter().enumerate() {
        let w_in = if stage == 0 { 8 } else { widths[stage - 1] };
        for block in 0..2 {
            let c_in = if block == 0 { w_in } else { w };
            let mut next = |name: String, shape: &[usize]| {
                seed += 1;
                float(&name, "F32", shape, seed)
            };
            t.push(next(format!("layer{}.{block}.conv1.weight", stage + 1), &[w, c_in, 3, 3]));
            t.push(next(format!("layer{}.{block}.conv2.weight", stage + 1), &[w, w, 3, 3]));
            if stage > 0 && block == 0 {
                t.push(next(format!("layer{}.0.downsample.0.weight", stage + 1), &[w, w_in, 1, 1]));
            }
        }
    }
    t.push(float("fc.weight", "F32", &[10, 64], 99));
    write(&p, &t, &[]);
    p
}

/// Every convolution's MACs at 224x224 input, from the architecture: `N·C·kh·kw·Ho·Wo`.
fn resnet18_eighth_macs() -> Vec<(String, u64)> {
    let mut v = vec![("conv1".to_string(), 8 * 3 * 49 * 112 * 112)];
    let widths = [8u64, 16, 32, 64];
    let out = [56u64, 28, 14, 7];
    for stage in 0..4 {
        let (w, o) = (widths[stage], out[stage]);
        let w_in = if stage == 0 { 8 } else { widths[stage - 1] };
        for block in 0..2 {
            let c_in = if block == 0 { w_in } else { w };
            v.push((format!("layer{}.{block}.conv1", stage + 1), w * c_in * 9 * o * o));
            v.push((format!("layer{}.{block}.conv2", stage + 1), w * w * 9 * o * o));
            if stage > 0 && block == 0 {
                v.push((format!("layer{}.0.downsample.0", stage + 1), w * w_in * o * o));
            }
        }
    }
    v
}

fn sidecar() -> PathBuf {
    crate::support::net::repo_root().join("docs/geometry-resnet18.json")
}

#[test]
fn the_resnet18_sidecar_gives_every_layer_its_real_size() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = resnet18_eighth(dir.path());
    let file = read_geometry(sidecar()).unwrap();
    let layers = file.layers;
    assert_eq!(file.input, Some((224, 224)));
    assert_eq!(layers.len(), 20);
    let mut o = InspectOptions::new().input_size(224, 224);
    for l in &layers {
        o = o.declare(l);
    }
    let infos = inspect_file(&ckpt, &o).unwrap();
    let want = resnet18_eighth_macs();
    assert_eq!(infos.len(), want.len());
    for (info, (name, macs)) in infos.iter().zip(&want) {
        assert_eq!(&info.name, name);
        assert_eq!(info.cost.macs, *macs, "{name}");
        assert_eq!(info.size, SizeSource::Declared, "{name}");
    }
    let conv1 = &infos[0];
    assert_eq!((conv1.geometry.stride, conv1.geometry.padding), ((2, 2), Padding::uniform(3)));
    // The converter counts the same, and so plans on the real sizes.
    let mut c = ConvertOptions::macs(1.5).input_size(224, 224);
    for l in &layers {
        c = c.declare(l);
    }
    let s = convert_file(&ckpt, dir.path().join("out.safetensors"), &c).unwrap();
    let fc = 10 * 64;
    assert_eq!(s.macs_before(), Some(want.iter().map(|(_, m)| m).sum::<u64>() + fc));
    let plan = s.plan.clone().unwrap();
    assert!(plan.met && plan.reduction() >= 1.5, "{plan:?}");
    assert_eq!(s.macs_after(), Some(plan.after.macs));
}

#[test]
fn declared_strides_shrink_the_counted_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = stack(dir.path());
    let base = ConvertOptions::new(Rank::Fixed(2)).input_size(16, 16);
    let plain = convert_file(&input, dir.path().join("a.safetensors"), &base).unwrap();
    let strided =
        convert_file(&input, dir.path().join("b.safetensors"), &base.clone().stride("c1", 2, 2).dilation("c2", 2, 2))
            .unwrap();
    let macs =
        |s: &dac::io::Summary, name: &str| s.converted.iter().find(|l| l.name == name).unwrap().before.unwrap().macs;
    // c1: 32x16x3x3 at 16x16 ("same" padding) -> 8x8 with stride 2.
    assert_eq!(macs(&plain, "c1"), 32 * 16 * 9 * 16 * 16);
    assert_eq!(macs(&strided, "c1"), 32 * 16 * 9 * 8 * 8);
    // c2 dilated 2 with the default padding 1: 16 + 2 - 5 + 1 = 14.
    assert_eq!(macs(&strided, "c2"), 64 * 32 * 9 * 14 * 14);
    // The file is the same: geometry changes counts, not the factors.
    assert_eq!(
        std::fs::read(dir.path().join("a.safetensors")).unwrap(),
        std::fs::read(dir.path().join("b.safetensors")).unwrap()
    );
    // A declared padding.
    let padded = base.clone().padding("c3", Padding { top: 0, bottom: 0, left: 1, right: 1 });
    let s = convert_file(&input, dir.path().join("c.safetensors"), &padded).unwrap();
    assert_eq!(macs(&s, "c3"), 64 * 64 * 9 * 14 * 16);
    // Zero strides and patterns matching nothing are errors naming the option.
    let e = convert_file(&input, dir.path().join("d.safetensors"), &base.clone().stride("c1", 0, 1)).unwrap_err();
    assert!(e.to_string().contains("stride (h)") && e.to_string().contains("c1"), "{e}");
    let e = convert_file(&input, dir.path().join("d.safetensors"), &base.stride("nope", 2, 2)).unwrap_err();
    assert!(matches!(e, Error::NoMatch { option: "stride", .. }), "{e}");
}

#[test]
fn bad_sidecars_name_the_file_and_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 5] = [
        ("not json", &["not a geometry file"]),
        (r#"{"input": [224]}"#, &["\"input\""]),
        (r#"{"layers": {"conv1": {"stride": 0}}}"#, &["conv1", "stride"]),
        (r#"{"layers": {"conv1": {"strides": 2}}}"#, &["conv1", "unknown field", "positions"]),
        (r#"{"layers": {"fc": {"positions": 0}}}"#, &["fc", "positions"]),
    ];
    for (i, (text, expect)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("g{i}.json"));
        std::fs::write(&p, text).unwrap();
        let e = read_geometry(&p).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        for part in *expect {
            assert!(e.contains(part), "{text}: `{part}` missing from {e}");
        }
    }
    let e = read_geometry(dir.path().join("missing.json")).unwrap_err().to_string();
    assert!(e.contains("missing.json"), "{e}");
}

/// `options` with every declaration of the sidecar `json` (written to `dir/g.json`).
fn with_sidecar(mut options: ConvertOptions, dir: &Path, json: &str) -> ConvertOptions {
    let sidecar = dir.join("g.json");
    std::fs::write(&sidecar, json).unwrap();
    for l in read_geometry(&sidecar).unwrap().layers {
        options = options.declare(&l);
    }
    options
}

#[test]
fn linear_layers_count_their_declared_positions() {
    let dir = tempfile::tempdir().unwrap();
    let input = resnet18_eighth(dir.path());
    let out = dir.path().join("o.safetensors");
    let base = ConvertOptions::new(Rank::Fixed(2)).input_size(224, 224);
    // `fc` is [10, 64]: one application per image by default (a classifier head).
    let once = convert_file(&input, &out, &base.clone().force(true)).unwrap();
    assert_eq!(once.linear.macs, 10 * 64);
    // A channels-last MLP runs at every position of its 7x7 map.
    let options = with_sidecar(base.clone().force(true), dir.path(), r#"{"layers": {"fc": {"positions": 49}}}"#);
    let spread = convert_file(&input, &out, &options).unwrap();
    assert_eq!(spread.linear.macs, 10 * 64 * 49);
    assert_eq!(spread.macs_before().unwrap() - once.macs_before().unwrap(), 10 * 64 * 48);
    assert!(spread.time_before().unwrap() > once.time_before().unwrap());
    // A positions pattern must name a linear layer; nothing is written.
    std::fs::remove_file(&out).unwrap();
    let e = convert_file(&input, &out, &base.clone().linear_positions("conv1", 4)).unwrap_err();
    assert!(matches!(&e, Error::NoMatch { option: "linear_positions", available, .. } if available == "fc"), "{e}");
    assert!(e.to_string().contains("matches no linear layer"), "{e}");
    let e = convert_file(&input, &out, &base.clone().linear_positions("fc", 0)).unwrap_err();
    assert!(matches!(&e, Error::InvalidParameter { what: "positions", .. }), "{e}");
    assert!(!out.exists());
}

/// A convolution `enc` 3 -> 16, a transposed convolution `up` 16 -> 8 (2x2, PyTorch's
/// `[in, out, kh, kw]`, bias of 8), a 1-D convolution's 3-D weight `c1d`.
fn decoder(dir: &Path) -> PathBuf {
    let p = dir.join("decoder.safetensors");
    let t = vec![
        float("enc.weight", "F32", &[16, 3, 3, 3], 1),
        float("up.weight", "F32", &[16, 8, 2, 2], 2),
        float("up.bias", "F32", &[8], 3),
        float("c1d.weight", "F32", &[4, 8, 3], 4),
    ];
    write(&p, &t, &[]);
    p
}

#[test]
fn transposed_convolutions_are_declared_left_dense_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = decoder(dir.path());
    let out = dir.path().join("o.safetensors");
    let base = ConvertOptions::new(Rank::Fixed(2)).input_size(8, 8);
    // Undeclared, its bias cannot be a convolution's; the error says what to declare.
    let e = convert_file(&input, &out, &base).unwrap_err().to_string();
    assert!(e.contains("up.bias") && e.contains("a bias needs [16]") && e.contains("transposed"), "{e}");
    assert!(!out.exists());
    let s = convert_file(&input, &out, &base.clone().transposed("up")).unwrap();
    let up = s.skipped.iter().find(|l| l.name == "up").expect("up is left dense");
    assert_eq!(up.reason, dac::convert::SkipReason::Transposed);
    // in · out · kh · kw per input position, on 8x8; parameters with its own bias of 8.
    let cost = up.cost.unwrap();
    assert_eq!((cost.macs, cost.params), (16 * 8 * 4 * 64, 16 * 8 * 4 + 8));
    assert_eq!(s.converted.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["enc"]);
    // The 1-D convolution's weight is named as neither converted nor counted.
    assert_eq!(s.other_weights, ["c1d.weight [4, 8, 3]"]);
    assert_eq!(s.macs_before(), Some(16 * 27 * 64 + 16 * 8 * 4 * 64));
    // The sidecar says the same.
    let options = with_sidecar(base.force(true), dir.path(), r#"{"layers": {"up": {"transposed": true}}}"#);
    let again = convert_file(&input, &out, &options).unwrap();
    assert_eq!(again.macs_before(), s.macs_before());
    let found = dac::io::inspect_model(
        &input,
        &InspectOptions::new().input_size(8, 8).declare(&{
            let mut g = dac::convert::LayerGeometry::named("up");
            g.transposed = true;
            g
        }),
    )
    .unwrap();
    assert_eq!(found.others.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["up"]);
    assert_eq!(found.total_macs(), s.macs_before());
    assert_eq!(found.other_weights, ["c1d.weight [4, 8, 3]"]);
}
