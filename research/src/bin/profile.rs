//! Where one dense forward pass of a shipped network spends its time, op by op, on one thread.
//!
//! ```text
//! cargo run --release -p dac-research --bin profile -- [vgg|alt] [IMAGES] [RANK]
//! cargo run --release -p dac-research --bin profile -- gemm
//! ```
//!
//! With `RANK`, every convolution whose break-even rank is above it runs as its DAC pair at
//! that rank (Frobenius fit). `gemm` measures the ceiling instead: one thread's throughput of
//! the executor on a large 1x1 convolution (one 128 x 1152 x 1600 GEMM, no im2col).

use dac_fmnist::{batches, masked, Dataset, Net, Op, Pair, Res};
use std::time::Instant;

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let stem = match args.next().as_deref() {
        None | Some("vgg") => "fmnist_vgg",
        Some("alt") => "fmnist_alt",
        Some("gemm") => return gemm_ceiling(),
        Some(other) => return Err(format!("unknown model `{other}` (vgg | alt)").into()),
    };
    let images: usize = args.next().map_or(Ok(2000), |n| n.parse())?;
    let rank: Option<usize> = args.next().map(|r| r.parse()).transpose()?;
    let root = dac_fmnist::repo_root();
    let net = Net::load(&root.join("models").join(stem))?;
    let pairs = match rank {
        Some(r) => pairs_at(&net, r)?,
        None => Vec::new(),
    };
    let refs: Vec<Option<&Pair>> = pairs.iter().map(Option::as_ref).collect();
    let data = Dataset::load_test(&root.join("data/fashion-mnist"))?.first(images);
    let mut seconds = vec![0.0f64; net.ops.len()];
    let start = Instant::now();
    for b in batches(&data, 100)? {
        let mut x = b;
        for (k, _) in net.ops.iter().enumerate() {
            let t = Instant::now();
            x = net.run_range(x, k, k + 1, &refs)?;
            seconds[k] += t.elapsed().as_secs_f64();
        }
    }
    let total = start.elapsed().as_secs_f64();
    let what = rank.map_or("dense".to_string(), |r| format!("every layer at rank {r} where it saves MACs"));
    println!("{stem} ({what}): {images} images on one thread, {total:.2} s");
    for (k, op) in net.ops.iter().enumerate() {
        let what = match op {
            Op::Conv(i) => format!("conv {}", net.convs[*i].name()),
            other => format!("{other:?}"),
        };
        println!("{k:>3} {what:<28} {:>8.3} s {:>5.1}%", seconds[k], 100.0 * seconds[k] / total);
    }
    Ok(())
}

/// Every convolution's DAC pair at `rank` (Frobenius fit) where that saves MACs, dense elsewhere.
fn pairs_at(net: &Net, rank: usize) -> Res<Vec<Option<Pair>>> {
    let svd = dac::svd::NalgebraSvd::default();
    let ranks = masked(net, 0..net.convs.len(), rank);
    net.convs
        .iter()
        .zip(ranks)
        .map(|(c, r)| {
            let Some(r) = r else { return Ok(None) };
            let d = dac::Factorization::compute(c, &svd)?.truncate(&dac::Options::new(r))?;
            Ok(Some(Pair { depthwise: d.depthwise, pointwise: d.pointwise }))
        })
        .collect()
}

/// One thread's multiply-accumulates per second on a 1x1 convolution of 1152 channels to 128
/// over 40x40 pixels (the executor's pointwise path: one GEMM, its operands as they are).
fn gemm_ceiling() -> Res<()> {
    use dac::exec::{fast, Tensor4};
    let w: Vec<f32> = (0..128 * 1152).map(|i| ((i * 7 % 13) as f32 - 6.0) / 60.0).collect();
    let layer = dac::Conv2dWeights::builder(w, [128, 1152, 1, 1]).build()?;
    let x = Tensor4::new((0..1152 * 1600).map(|i| (i as f32 * 0.1).sin()).collect(), [1, 1152, 40, 40])?;
    let mut scratch = fast::Scratch::new();
    let mut run = || fast::conv2d(&x, &layer, fast::Parallelism::Sequential, &mut scratch);
    run()?;
    let (reps, start) = (50, Instant::now());
    for _ in 0..reps {
        run()?;
    }
    let seconds = start.elapsed().as_secs_f64() / reps as f64;
    let macs = 128.0 * 1152.0 * 1600.0;
    println!("1x1 convolution 1152 -> 128 at 40x40 (one GEMM): {:.1} GMAC/s on one thread", macs / seconds / 1e9);
    Ok(())
}
