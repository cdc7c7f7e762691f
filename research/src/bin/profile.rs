//! Where one dense forward pass of a shipped network spends its time, op by op, on one thread.
//!
//! ```text
//! cargo run --release -p dac-research --bin profile -- [vgg|alt] [IMAGES]
//! ```

use dac_fmnist::{batches, Dataset, Net, Op, Res};
use std::time::Instant;

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let stem = match args.next().as_deref() {
        None | Some("vgg") => "fmnist_vgg",
        Some("alt") => "fmnist_alt",
        Some(other) => return Err(format!("unknown model `{other}` (vgg | alt)").into()),
    };
    let images: usize = args.next().map_or(Ok(2000), |n| n.parse())?;
    let root = dac_fmnist::repo_root();
    let net = Net::load(&root.join("models").join(stem))?;
    let data = Dataset::load_test(&root.join("data/fashion-mnist"))?.first(images);
    let mut seconds = vec![0.0f64; net.ops.len()];
    let start = Instant::now();
    for b in batches(&data, 100)? {
        let mut x = b;
        for (k, _) in net.ops.iter().enumerate() {
            let t = Instant::now();
            x = net.run_range(x, k, k + 1, dac_fmnist::DENSE)?;
            seconds[k] += t.elapsed().as_secs_f64();
        }
    }
    let total = start.elapsed().as_secs_f64();
    println!("{stem}: {images} images on one thread, {total:.2} s");
    for (k, op) in net.ops.iter().enumerate() {
        let what = match op {
            Op::Conv(i) => format!("conv {}", net.convs[*i].name()),
            other => format!("{other:?}"),
        };
        println!("{k:>3} {what:<28} {:>8.3} s {:>5.1}%", seconds[k], 100.0 * seconds[k] / total);
    }
    Ok(())
}
