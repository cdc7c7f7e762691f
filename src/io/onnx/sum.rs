//! The sum layout ([`Layout::Sum`](crate::convert::Layout::Sum)): a factored `Conv` as parallel
//! branches of plain `Conv`s on its input, added.
//!
//! - DAC at rank `r`: branch `j` is the depthwise `Conv` of every channel's `j`-th kernel
//!   (`C` channels, multiplier 1, the layer's geometry) and the 1x1 `Conv` of the pointwise
//!   weights of component `j` (`C/g` inputs per group to `N`).
//! - Network Decoupling at rank `T`: branch `t` is the 1x1 `Conv` of every output's `t`-th
//!   expansion row (to `N` channels, the layer's groups) and the depthwise `Conv` of its `t`-th
//!   kernel scaled by the summing weight (`N` channels, the layer's geometry).
//!
//! The first branch's last `Conv` carries the bias; `Add` nodes chain the branches, the last
//! producing the original output.

use super::layout::{conv_attrs, Names};
use super::proto::{self, NewNode, Node};
use crate::scheme::{FactorSpec, SchemeKind};
use crate::weights::{ConvShape, Geometry};

/// One branch's factors and their values in the core's weight layout.
pub(crate) type Branch = Vec<(FactorSpec, Vec<f64>)>;

/// The branches of `scheme`'s factors `values` (as [`SchemeKind::factor_specs`] lays them out)
/// at `rank`; `None` for a scheme without the sum layout.
pub(crate) fn branches(
    scheme: SchemeKind,
    shape: &ConvShape,
    geometry: &Geometry,
    rank: usize,
    values: &[Vec<f64>],
) -> Option<Vec<Branch>> {
    match scheme {
        SchemeKind::Dac => Some(dac(shape, geometry, rank, values)),
        SchemeKind::Decoupled => Some(decoupled(shape, geometry, rank, values)),
        _ => None,
    }
}

fn dac(shape: &ConvShape, geometry: &Geometry, r: usize, values: &[Vec<f64>]) -> Vec<Branch> {
    let (n, c, cg, taps) = (shape.out_channels, shape.in_channels, shape.in_per_group(), shape.taps());
    let (dw, pw) = (&values[0], &values[1]);
    let depthwise = Geometry { groups: c, ..*geometry };
    let pointwise = Geometry { groups: shape.groups, ..Geometry::default() };
    (0..r)
        .map(|j| {
            let d: Vec<f64> = (0..c).flat_map(|ch| dw[(ch * r + j) * taps..][..taps].iter().copied()).collect();
            let p: Vec<f64> = (0..n * cg).map(|i| pw[(i / cg) * cg * r + (i % cg) * r + j]).collect();
            vec![
                (FactorSpec::new("depthwise", [c, 1, shape.kh, shape.kw], depthwise), d),
                (FactorSpec::new("pointwise", [n, cg, 1, 1], pointwise), p),
            ]
        })
        .collect()
}

fn decoupled(shape: &ConvShape, geometry: &Geometry, t: usize, values: &[Vec<f64>]) -> Vec<Branch> {
    let (n, cg, taps) = (shape.out_channels, shape.in_per_group(), shape.taps());
    let (expand, dw, sum) = (&values[0], &values[1], &values[2]);
    let pointwise = Geometry { groups: shape.groups, ..Geometry::default() };
    let depthwise = Geometry { groups: n, ..*geometry };
    (0..t)
        .map(|k| {
            let e: Vec<f64> = (0..n).flat_map(|o| expand[(o * t + k) * cg..][..cg].iter().copied()).collect();
            let d: Vec<f64> =
                (0..n).flat_map(|o| dw[(o * t + k) * taps..][..taps].iter().map(move |v| v * sum[o * t + k])).collect();
            vec![
                (FactorSpec::new("expand", [n, cg, 1, 1], pointwise), e),
                (FactorSpec::new("depthwise", [n, 1, shape.kh, shape.kw], depthwise), d),
            ]
        })
        .collect()
}

/// The branches' factors and initializer names, per branch, and the encoded initializers.
pub(crate) struct Encoded {
    pub specs: Vec<Vec<FactorSpec>>,
    pub names: Vec<Vec<String>>,
    pub initializers: Vec<Vec<u8>>,
}

/// Fresh names for the branches' initializers (`<stem>.<role>.<branch>.weight`), and the
/// encoded initializers in `data_type`.
pub(crate) fn initializers(branches: &[Branch], stem: &str, names: &mut Names, data_type: i64) -> Encoded {
    let mut out = Encoded { specs: Vec::new(), names: Vec::new(), initializers: Vec::new() };
    for (k, b) in branches.iter().enumerate() {
        let n: Vec<String> = b.iter().map(|(f, _)| names.fresh(&format!("{stem}.{}.{k}.weight", f.role))).collect();
        let encode =
            |((f, v), name): (&(FactorSpec, Vec<f64>), &String)| proto::encode_tensor(name, &f.dims, data_type, v);
        out.initializers.extend(b.iter().zip(&n).map(encode));
        out.specs.push(b.iter().map(|(f, _)| *f).collect());
        out.names.push(n);
    }
    out
}

/// Branches replacing one `Conv` node.
pub(crate) struct Sum<'n, 'a> {
    pub node: &'n Node<'a>,
    /// Each branch's factors, in order.
    pub specs: Vec<Vec<FactorSpec>>,
    /// The weight's stem.
    pub stem: &'n str,
}

impl<'n, 'a> Sum<'n, 'a> {
    /// The nodes replacing the `Conv`, in graph order: each branch, then the `Add` summing it
    /// into the branches before it. The node producing the original output (the last `Add`, or
    /// the only branch's last `Conv`) carries the original node's extra fields.
    pub(crate) fn nodes(&self, n: &[Vec<String>], names: &mut Names) -> Vec<NewNode<'a>> {
        let y = self.node.outputs[0];
        let count = self.specs.len();
        let mut nodes = Vec::new();
        let mut total: Option<String> = None;
        for (k, (branch, weights)) in self.specs.iter().zip(n).enumerate() {
            let last = k + 1 == count;
            let out = if count == 1 { y.to_string() } else { names.fresh(&format!("{y}/dac_branch.{k}")) };
            nodes.extend(self.branch(k, branch, weights, &out, names));
            total = Some(match total {
                None => out,
                Some(sum) => {
                    let output = if last { y.to_string() } else { names.fresh(&format!("{y}/dac_sum.{k}")) };
                    nodes.push(self.new_node(
                        "Add",
                        vec![out, sum],
                        output.clone(),
                        format!("add.{k}"),
                        Vec::new(),
                        last,
                        names,
                    ));
                    output
                }
            });
        }
        nodes
    }

    /// Branch `k`'s `Conv`s on the layer's input, the last writing `out` (with the bias when
    /// `k` is 0).
    fn branch(
        &self,
        k: usize,
        specs: &[FactorSpec],
        weights: &[String],
        out: &str,
        names: &mut Names,
    ) -> Vec<NewNode<'a>> {
        let bias = self.node.inputs.get(2).filter(|b| !b.is_empty() && k == 0);
        let mut input = self.node.inputs[0].to_string();
        let mut nodes = Vec::with_capacity(specs.len());
        for (i, (f, w)) in specs.iter().zip(weights).enumerate() {
            let last = i + 1 == specs.len();
            let y = self.node.outputs[0];
            let output = if last { out.to_string() } else { names.fresh(&format!("{y}/dac_{}.{k}", f.role)) };
            let mut inputs = vec![std::mem::replace(&mut input, output.clone()), w.clone()];
            inputs.extend(bias.filter(|_| last).map(|b| b.to_string()));
            let produces_y = last && out == y;
            nodes.push(self.new_node(
                "Conv",
                inputs,
                output,
                format!("{}.{k}", f.role),
                conv_attrs(f),
                produces_y,
                names,
            ));
        }
        nodes
    }

    /// A node named `<base>/<what>`; `original` gives it the original node's extra fields.
    #[allow(clippy::too_many_arguments)]
    fn new_node(
        &self,
        op_type: &'static str,
        inputs: Vec<String>,
        output: String,
        what: String,
        attrs: Vec<Vec<u8>>,
        original: bool,
        names: &mut Names,
    ) -> NewNode<'a> {
        let node = self.node;
        let base = if node.name.is_empty() { self.stem } else { node.name };
        NewNode {
            inputs,
            outputs: vec![output],
            name: names.fresh(&format!("{base}/{what}")),
            op_type,
            attrs,
            extra: if original { node.extra_fields().map(|f| f.raw).collect() } else { Vec::new() },
            domain: node.domain.to_string(),
        }
    }
}
