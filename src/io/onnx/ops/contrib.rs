//! Shape rules of the `com.microsoft` operators onnxruntime's tools write into models: its
//! quantizer's QOperator format (`QGemm`, `QLinearAdd`, ...) and its offline fusions
//! (`FusedConv`, `FusedGemm`).

use super::spatial::{conv, global_pool};
use super::{gemm, gemm_dims, Out, Rule};
use crate::io::onnx::infer::{broadcast, Ctx, Fact, Stop};
use crate::io::onnx::proto::Node;

/// The rule of a `com.microsoft` operator dac knows.
pub(super) fn rule(node: &Node<'_>) -> Option<Rule> {
    Some(match node.op_type {
        "FusedConv" => conv,
        "FusedGemm" => gemm,
        "QGemm" => qgemm,
        "QLinearAdd" | "QLinearMul" => qlinear_binary,
        "QLinearSigmoid" | "QLinearLeakyRelu" | "QLinearSoftmax" => qlinear_unary,
        "QLinearGlobalAveragePool" => qlinear_global_pool,
        _ => return None,
    })
}

/// Whether `node` is the `com.microsoft` operator `op`.
pub(crate) fn is(node: &Node<'_>, op: &str) -> bool {
    node.domain == "com.microsoft" && node.op_type == op
}

/// `QGemm`: a `Gemm` of inputs 0 and 3 (each followed by its scale and zero point).
fn qgemm(c: &Ctx<'_, '_>) -> Out {
    let (m, _, n) = gemm_dims(c.node, &c.input(0)?.shape, &c.input(3)?.shape)?;
    Ok(vec![Fact::shaped(vec![m, n])])
}

/// `QLinearAdd`, `QLinearMul`: inputs 0 and 3 broadcast.
fn qlinear_binary(c: &Ctx<'_, '_>) -> Out {
    let (a, b) = (c.input(0)?, c.input(3)?);
    Ok(vec![Fact::shaped(broadcast(&[&a.shape, &b.shape])?)])
}

/// The quantized activations: input 0's shape.
fn qlinear_unary(c: &Ctx<'_, '_>) -> Out {
    Ok(vec![Fact::shaped(c.input(0)?.shape.clone())])
}

/// `QLinearGlobalAveragePool` on NCHW (`channels_last = 0`).
fn qlinear_global_pool(c: &Ctx<'_, '_>) -> Out {
    if c.int("channels_last", 0) != 0 {
        return Err(Stop::Reason("channels_last = 1".into()));
    }
    global_pool(c)
}
