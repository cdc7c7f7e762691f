//! Shape rules of the operators that pick elements by index: `GatherElements` and `TopK`.

use super::Out;
use crate::io::onnx::infer::{axis, Ctx, Fact, Stop};

/// `GatherElements`: the shape of its indices (input 1).
pub(super) fn gather_elements(c: &Ctx<'_, '_>) -> Out {
    Ok(vec![Fact::shaped(c.input(1)?.shape.clone())])
}

/// `TopK`: values and indices, the input with `k` (input 1, or the attribute before opset 10)
/// along `axis`.
pub(super) fn top_k(c: &Ctx<'_, '_>) -> Out {
    let x = c.input(0)?;
    let a = axis(c.int("axis", -1), x.shape.len())?;
    let k = if c.opset < 10 { Some(vec![c.int("k", 0)]) } else { c.ints_input(1)? };
    let k = match k.as_deref() {
        Some(&[k]) if k >= 0 => k as usize,
        _ => return Err(Stop::Reason("has no constant k".into())),
    };
    let mut shape = x.shape.clone();
    shape[a] = k;
    Ok(vec![Fact::shaped(shape.clone()), Fact::shaped(shape)])
}
