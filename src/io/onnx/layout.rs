//! The nodes and initializers that replace a converted `Conv`, per [`Layout`].

use super::proto::{self, NewNode, Node};
use crate::convert::Layout;
use crate::scheme::FactorSpec;
use crate::weights::ConvShape;
use std::collections::HashSet;

/// Fresh names: never one already in the model or handed out before.
pub(crate) struct Names(pub HashSet<String>);

impl Names {
    pub(crate) fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.0.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

/// A DAC pair's weights as the core laid them out (depthwise `[C·r, 1, kh, kw]`, pointwise
/// `[N, Cg·r, 1, 1]`), in f64.
pub(crate) struct PairValues<'v> {
    pub depthwise: &'v [f64],
    pub pointwise: &'v [f64],
}

/// The initializer names of a pair written once (a weight shared by several `Conv`s at the same
/// rank is decomposed once).
#[derive(Debug, Clone)]
pub(crate) struct PairNames {
    pub depthwise: Vec<String>,
    pub pointwise: String,
}

/// Where and how a converted `Conv` is laid out.
pub(crate) struct Site<'n, 'a> {
    pub node: &'n Node<'a>,
    pub shape: ConvShape,
    pub rank: usize,
    pub layout: Layout,
    pub opset: Option<i64>,
    /// The weight's stem (`<stem>.depthwise.weight`, ...).
    pub stem: &'n str,
}

impl Site<'_, '_> {
    /// Depthwise `Conv`s of the layout: one (fused) or `g·r` (multiplier 1).
    fn pieces(&self) -> usize {
        match self.layout {
            Layout::Multiplier1 => self.shape.groups * self.rank,
            _ => 1,
        }
    }

    /// Fresh names for the pair's initializers.
    pub(crate) fn pair_names(&self, names: &mut Names) -> PairNames {
        let s = self.stem;
        let depthwise = if self.pieces() == 1 {
            vec![names.fresh(&format!("{s}.depthwise.weight"))]
        } else {
            (0..self.pieces()).map(|k| names.fresh(&format!("{s}.depthwise.{k}.weight"))).collect()
        };
        PairNames { depthwise, pointwise: names.fresh(&format!("{s}.pointwise.weight")) }
    }

    /// The encoded initializers of the pair in `data_type`.
    pub(crate) fn initializers(&self, pair: &PairValues<'_>, n: &PairNames, data_type: i64) -> Vec<Vec<u8>> {
        let sh = &self.shape;
        let (r, cg, taps) = (self.rank, sh.in_per_group(), sh.taps());
        let pw_dims = [sh.out_channels, cg * r, 1, 1];
        match self.layout {
            Layout::Fused | Layout::Sum => vec![
                proto::encode_tensor(
                    &n.depthwise[0],
                    &[sh.in_channels * r, 1, sh.kh, sh.kw],
                    data_type,
                    pair.depthwise,
                ),
                proto::encode_tensor(&n.pointwise, &pw_dims, data_type, pair.pointwise),
            ],
            _ => {
                let mut out = Vec::with_capacity(self.pieces() + 1);
                for gi in 0..sh.groups {
                    for j in 0..r {
                        let mut w = Vec::with_capacity(cg * taps);
                        for cl in 0..cg {
                            let src = ((gi * cg + cl) * r + j) * taps;
                            w.extend_from_slice(&pair.depthwise[src..src + taps]);
                        }
                        let dims = [cg, 1, sh.kh, sh.kw];
                        out.push(proto::encode_tensor(&n.depthwise[gi * r + j], &dims, data_type, &w));
                    }
                }
                // Concatenated channel (within a group) j*Cg + cl holds the fused channel cl*r + j.
                let mut pw = vec![0.0; pair.pointwise.len()];
                for o in 0..sh.out_channels {
                    for cl in 0..cg {
                        for j in 0..r {
                            pw[o * cg * r + j * cg + cl] = pair.pointwise[o * cg * r + cl * r + j];
                        }
                    }
                }
                out.push(proto::encode_tensor(&n.pointwise, &pw_dims, data_type, &pw));
                out
            }
        }
    }

    /// The node's attributes with `group` set to `group`.
    fn attrs_with_group(&self, group: usize) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = Vec::new();
        let mut had = false;
        for a in &self.node.attrs {
            if a.name == "group" {
                v.push(proto::attr_int("group", group as i64));
                had = true;
            } else {
                v.push(a.payload.to_vec());
            }
        }
        if !had {
            v.push(proto::attr_int("group", group as i64));
        }
        v
    }

    /// The nodes replacing the `Conv`, in graph order; the last produces its output.
    pub(crate) fn nodes(&self, n: &PairNames, names: &mut Names) -> Vec<NewNode<'_>> {
        let node = self.node;
        let (x, y) = (node.inputs[0], node.outputs[0]);
        let base = if node.name.is_empty() { self.stem.to_string() } else { node.name.to_string() };
        let mid = names.fresh(&format!("{y}/dac_depthwise"));
        let mut nodes = match self.layout {
            Layout::Fused | Layout::Sum => vec![self.conv(
                x.to_string(),
                n.depthwise[0].clone(),
                mid.clone(),
                self.shape.in_channels,
                &base,
                "depthwise",
                names,
            )],
            _ => self.multiplier1(n, &mid, &base, names),
        };
        let mut attrs = vec![proto::attr_ints("kernel_shape", &[1, 1])];
        if self.shape.groups != 1 {
            attrs.push(proto::attr_int("group", self.shape.groups as i64));
        }
        let mut inputs = vec![mid, n.pointwise.clone()];
        if let Some(b) = node.inputs.get(2).filter(|b| !b.is_empty()) {
            inputs.push(b.to_string());
        }
        nodes.push(NewNode {
            inputs,
            outputs: vec![y.to_string()],
            name: names.fresh(&format!("{base}/pointwise")),
            op_type: "Conv",
            attrs,
            extra: node.extra_fields().map(|f| f.raw).collect(),
            domain: node.domain.to_string(),
        });
        nodes
    }

    /// A depthwise `Conv` with the original attributes and `group`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        x: String,
        w: String,
        out: String,
        group: usize,
        base: &str,
        what: &str,
        names: &mut Names,
    ) -> NewNode<'_> {
        NewNode {
            inputs: vec![x, w],
            outputs: vec![out],
            name: names.fresh(&format!("{base}/{what}")),
            op_type: "Conv",
            attrs: self.attrs_with_group(group),
            extra: Vec::new(),
            domain: self.node.domain.to_string(),
        }
    }

    /// `Split` into groups (when grouped), `g·r` depthwise convs of multiplier 1, `Concat`.
    fn multiplier1(&self, n: &PairNames, mid: &str, base: &str, names: &mut Names) -> Vec<NewNode<'_>> {
        let (x, y, g) = (self.node.inputs[0], self.node.outputs[0], self.shape.groups);
        let domain = self.node.domain.to_string();
        let mut nodes = Vec::new();
        let slices: Vec<String> = if g == 1 {
            vec![x.to_string()]
        } else {
            let outs: Vec<String> = (0..g).map(|gi| names.fresh(&format!("{y}/dac_group.{gi}"))).collect();
            let mut attrs = vec![proto::attr_int("axis", 1)];
            if self.opset.unwrap_or(0) >= 18 {
                attrs.push(proto::attr_int("num_outputs", g as i64));
            }
            let name = names.fresh(&format!("{base}/split"));
            nodes.push(NewNode {
                inputs: vec![x.to_string()],
                outputs: outs.clone(),
                name,
                op_type: "Split",
                attrs,
                extra: Vec::new(),
                domain: domain.clone(),
            });
            outs
        };
        let pieces = self.pieces();
        let mut parts = Vec::with_capacity(pieces);
        for (gi, slice) in slices.iter().enumerate() {
            for j in 0..self.rank {
                let k = gi * self.rank + j;
                let out = if pieces == 1 { mid.to_string() } else { names.fresh(&format!("{y}/dac_depthwise.{k}")) };
                let what = format!("depthwise.{k}");
                nodes.push(self.conv(
                    slice.clone(),
                    n.depthwise[k].clone(),
                    out.clone(),
                    self.shape.in_per_group(),
                    base,
                    &what,
                    names,
                ));
                parts.push(out);
            }
        }
        if pieces > 1 {
            let attrs = vec![proto::attr_int("axis", 1)];
            let name = names.fresh(&format!("{base}/concat"));
            nodes.push(NewNode {
                inputs: parts,
                outputs: vec![mid.to_string()],
                name,
                op_type: "Concat",
                attrs,
                extra: Vec::new(),
                domain,
            });
        }
        nodes
    }
}

/// A scheme's factors other than DAC's pair, as a chain of plain `Conv` nodes: each factor's
/// own kernel, strides, pads, dilations and group; the last carries the bias and produces the
/// original output.
pub(crate) struct Chain<'n, 'a> {
    pub node: &'n Node<'a>,
    pub specs: Vec<FactorSpec>,
    /// The weight's stem (`<stem>.<role>.weight`).
    pub stem: &'n str,
}

impl Chain<'_, '_> {
    /// Fresh names for the factors' initializers.
    pub(crate) fn names(&self, names: &mut Names) -> Vec<String> {
        self.specs.iter().map(|f| names.fresh(&format!("{}.{}.weight", self.stem, f.role))).collect()
    }

    /// The encoded initializers of the factors (`values` in the core's layout) in `data_type`.
    pub(crate) fn initializers(&self, values: &[Vec<f64>], n: &[String], data_type: i64) -> Vec<Vec<u8>> {
        let items = self.specs.iter().zip(values).zip(n);
        items.map(|((f, v), name)| proto::encode_tensor(name, &f.dims, data_type, v)).collect()
    }

    /// The nodes replacing the `Conv`, in graph order.
    pub(crate) fn nodes(&self, n: &[String], names: &mut Names) -> Vec<NewNode<'_>> {
        let node = self.node;
        let (x, y) = (node.inputs[0], node.outputs[0]);
        let base = if node.name.is_empty() { self.stem.to_string() } else { node.name.to_string() };
        let last = self.specs.len() - 1;
        let mut input = x.to_string();
        let mut nodes = Vec::with_capacity(self.specs.len());
        for (k, (f, w)) in self.specs.iter().zip(n).enumerate() {
            let output = if k == last { y.to_string() } else { names.fresh(&format!("{y}/dac_{}", f.role)) };
            let mut inputs = vec![std::mem::replace(&mut input, output.clone()), w.clone()];
            if let Some(b) = node.inputs.get(2).filter(|b| !b.is_empty() && k == last) {
                inputs.push(b.to_string());
            }
            nodes.push(NewNode {
                inputs,
                outputs: vec![output],
                name: names.fresh(&format!("{base}/{}", f.role)),
                op_type: "Conv",
                attrs: conv_attrs(f),
                extra: if k == last { node.extra_fields().map(|f| f.raw).collect() } else { Vec::new() },
                domain: node.domain.to_string(),
            });
        }
        nodes
    }
}

/// Explicit `Conv` attributes of a factor.
pub(crate) fn conv_attrs(f: &FactorSpec) -> Vec<Vec<u8>> {
    let g = &f.geometry;
    let p = g.padding;
    let ints = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
    vec![
        proto::attr_ints("kernel_shape", &ints(&[f.dims[2], f.dims[3]])),
        proto::attr_ints("strides", &ints(&[g.stride.0, g.stride.1])),
        proto::attr_ints("pads", &ints(&[p.top, p.left, p.bottom, p.right])),
        proto::attr_ints("dilations", &ints(&[g.dilation.0, g.dilation.1])),
        proto::attr_int("group", g.groups as i64),
    ]
}
