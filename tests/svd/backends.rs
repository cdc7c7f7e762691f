//! Every SVD backend, f32 and f64, through the shared contract (`harness::backend_contract`):
//! the definition on random matrices, and bad input an error, never a panic.

use crate::support::harness::{backend_contract, backends};
use dac::svd::{NalgebraSvd, SvdBackend};

/// Matrix shapes: wide, tall, square, single row and column, the 3x3 and 5x5 tap counts (the
/// first ten, with seed 1, are the matrices tests/svd/gram.rs compares with nalgebra), and the
/// shapes the non-finite checks were first written for.
const SHAPES: [(usize, usize); 14] = [
    (1, 9),
    (2, 9),
    (5, 9),
    (9, 9),
    (16, 9),
    (64, 9),
    (40, 25),
    (7, 1),
    (30, 49),
    (3, 4),
    (7, 25),
    (30, 4),
    (5, 1),
    (1, 1),
];

#[test]
fn every_backend_meets_the_contract_f64() {
    for backend in backends::<f64>() {
        backend_contract(backend.as_ref(), &SHAPES, 1);
    }
}

#[test]
fn every_backend_meets_the_contract_f32() {
    for backend in backends::<f32>() {
        backend_contract(backend.as_ref(), &SHAPES, 1);
    }
}

/// A matrix on which nalgebra's f64 iteration stopped short (σ2, σ3 = 1.42496, 1.28939 for
/// 1.42278, 1.28742; energy 3e-4 high; channel 2 of a correlated fit found by
/// `fit::correlated_fit_minimises_the_output_error`). The backend checks every result and
/// recomputes this one by one-sided Jacobi. Expected values: numpy 2.x `np.linalg.svd` (LAPACK
/// gesdd) of the same matrix.
#[rustfmt::skip]
const STOPS_SHORT_8X10: [f64; 80] = [
    0.48096310058656605, 0.24520003474229465, 0.4892326458033442, 0.12234961429416101, 0.116379495614741, 0.0557582309728341, 0.23472879218489787, 0.047576949538083856, 0.5488405409083091, 0.19936909631117725,
    0.22271986006691125, -0.41975241188948553, 0.2968127433093901, -0.06840269514868885, 0.6038374535759559, -0.1614816776211875, 0.865561743398585, 0.27839763502635645, 0.4114880605438903, -0.2952175433623243,
    -0.0997531122560059, 0.09613720838506228, 0.01952448843361828, 0.24936966878450723, 0.4566567723728587, 0.4515219511216224, 0.25562873964111626, 0.2872078360145679, 0.6134153479780267, 0.5704200660110059,
    -0.30344220893441654, -0.35966792335528003, -0.313053834426743, -0.6435654418348387, -0.7357150266909027, -0.7988769003301275, -0.5685890866892697, -0.4690988295056411, -0.31381444597341657, -0.35536664004241036,
    1.6729372744641304, 1.6806237151045533, 1.6283503472287035, 1.661248452012219, 1.440417585917347, 1.4384859958808613, 1.3296876022047726, 1.1328953774001957, 1.241213771105704, 1.103560816881505,
    0.6100041329864347, 0.6672910996238889, 0.8204798659133867, 0.5200001553303951, 1.0069417772995273, 0.9693492382932838, 0.7904289816486854, 0.8457638580630318, 0.4659314088805161, 0.3137618958748491,
    0.3803063102726577, 0.15874854725747384, 0.12781343165342512, 0.12243816730664886, 0.41098799895592725, 0.03688422253963508, 0.6126929426421608, -0.17546087043360298, 0.5650544072423545, -0.34589172950531094,
    -0.018090740313090145, -0.06141773604538586, -0.5326645877093363, -0.6755519014113502, -0.7293781850346246, -0.8001810224411372, -0.4988997063651946, -0.5969835364708497, 0.16204496702694587, 0.032209369254502074,
];

#[test]
fn nalgebra_f64_is_checked_where_its_iteration_stops_short() {
    let want = [
        5.663602583939456,
        1.422778251608935,
        1.2874162838459589,
        0.8223923762989899,
        0.5166325008903477,
        0.3610469716339328,
        0.2477835609085876,
        0.09613014570212229,
    ];
    let (mut s, mut vt) = ([0.0f64; 8], [0.0f64; 80]);
    NalgebraSvd::default().right_factors(&STOPS_SHORT_8X10, 8, 10, &mut s, &mut vt).unwrap();
    for (j, (got, want)) in s.iter().zip(want).enumerate() {
        assert!((got - want).abs() <= 1e-12 * want, "singular value {j}: {got} against {want}");
    }
    // The right vectors: orthonormal, and |M v_j| = s_j.
    for j in 0..8 {
        for i in 0..8 {
            let dot: f64 = (0..10).map(|c| vt[j * 10 + c] * vt[i * 10 + c]).sum();
            assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-13, "vᵀv ({j}, {i}) = {dot}");
        }
        let mv: f64 =
            (0..8).map(|r| (0..10).map(|c| STOPS_SHORT_8X10[r * 10 + c] * vt[j * 10 + c]).sum::<f64>().powi(2)).sum();
        assert!((mv.sqrt() - want[j]).abs() <= 1e-12 * want[0], "|M v_{j}| = {}", mv.sqrt());
    }
}
