//! Every SVD backend, f32 and f64, through the shared contract (`harness::backend_contract`):
//! the definition on random matrices, and bad input an error, never a panic.

use crate::support::harness::{backend_contract, backends};

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
