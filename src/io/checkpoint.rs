//! The safetensors adapter: lists a checkpoint's convolutions, loads and factors the layers the
//! pipeline ([`crate::convert`]) picks, and streams the output file.

use super::atomic::{self, AtomicFile};
use super::records::{FactorRecord, LayerRecord, FORMAT_VERSION};
use super::safetensors::{format_error, header_block, write_all, write_values, Checkpoint, OutEntry};
use super::{Phase, Progress};
use crate::convert::{
    self, Analysis, ConvertOptions, Decision, FloatDtype, Found, Layout, RankSource, Selection, Site, SkipReason,
    Summary,
};
use crate::cost;
use crate::decompose::Split;
use crate::error::{Error, Result};
use crate::fit::Fit;
use crate::plan::Plan;
use crate::scalar::Real;
use crate::scheme::{FactorSpec, Factored, Scheme, SchemeKind, Workspace};
use crate::storage::Storage;
use crate::time::{TimeModel, TimedNode};
use crate::weights::{Conv2dWeights, Geometry, Padding};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// What MAC counts assume for a checkpoint, which has no geometry.
pub const ASSUMPTION: &str =
    "MACs assume stride 1 and \"same\" padding where no geometry is declared (a checkpoint has \
     none), and one application per image of a linear layer whose positions are not declared";

/// A found convolution's tensors (indices into the checkpoint's tensors).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tensors {
    pub weight: usize,
    pub bias: Option<usize>,
}

/// An error about one layer, with the file's name added (errors naming the file pass through).
pub(crate) fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Io { .. } | Error::Format { .. } | Error::InFile { .. } | Error::NoMatch { .. } => e,
        other => Error::InFile { file: path.to_path_buf(), source: Box::new(other) },
    }
}

/// Every 4-D `<layer>.weight` with its bias, validated; groups are left to the user's
/// declarations, geometry is stride 1 and "same" padding.
pub(crate) fn discover(ck: &Checkpoint) -> Result<(Vec<Found>, Vec<Tensors>)> {
    let converted: Vec<&str> = ck.metadata.keys().filter_map(|k| k.strip_prefix("dac.layer.")).collect();
    let (mut found, mut tensors) = (Vec::new(), Vec::new());
    for (i, t) in ck.tensors.iter().enumerate() {
        let Some(name) = t.name.strip_suffix(".weight") else { continue };
        if name.is_empty() || t.shape.len() != 4 {
            continue;
        }
        let dims = [t.shape[0], t.shape[1], t.shape[2], t.shape[3]];
        if dims.contains(&0) {
            return Err(format_error(&ck.path, Some(&t.name), format!("shape {dims:?} has a zero dimension")));
        }
        let bias_name = format!("{name}.bias");
        let bias = ck.tensors.iter().position(|b| b.name == bias_name);
        if let Some(b) = bias.map(|b| &ck.tensors[b]) {
            // Its length is checked once the layer's groups and kind are known.
            if b.shape.len() != 1 {
                let reason = format!("shape {:?}: a bias of `{}` is one-dimensional", b.shape, t.name);
                return Err(format_error(&ck.path, Some(&b.name), reason));
            }
        }
        let already = converted.iter().any(|c| name.strip_suffix(".depthwise") == Some(*c));
        found.push(Found {
            name: name.to_string(),
            keys: vec![name.to_string()],
            weight: t.name.clone(),
            dims,
            geometry: Geometry { padding: Padding::same(dims[2], dims[3]), ..Geometry::default() },
            groups_known: false,
            bias_len: bias.map(|b| ck.tensors[b].shape[0]),
            inferred_size: None,
            unknown_size: None,
            blocked: already.then_some(SkipReason::AlreadyConverted),
            context: Vec::new(),
        });
        tensors.push(Tensors { weight: i, bias });
    }
    Ok((found, tensors))
}

/// The float `<name>.weight` tensors of 3 or 5 dimensions (1-D and 3-D convolutions'), as
/// `"name [shape]"`: a checkpoint cannot size them, so they are neither converted nor counted.
pub(crate) fn other_weights(ck: &Checkpoint) -> Vec<String> {
    ck.tensors
        .iter()
        .filter(|t| t.name.ends_with(".weight") && matches!(t.shape.len(), 3 | 5) && t.float_dtype().is_some())
        .map(|t| format!("{} {:?}", t.name, t.shape))
        .collect()
}

/// Checks that a layer to be converted has float tensors.
pub(crate) fn check_dtypes(ck: &Checkpoint, t: Tensors) -> Result<()> {
    for e in std::iter::once(t.weight).chain(t.bias).map(|i| &ck.tensors[i]) {
        if e.float_dtype().is_none() {
            let reason = format!(
                "dtype {} is not supported for conversion (supported: F32, F64, F16, BF16); exclude the layer to keep it",
                e.dtype
            );
            return Err(format_error(&ck.path, Some(&e.name), reason));
        }
    }
    Ok(())
}

/// Reads a layer as a validated [`Conv2dWeights`], to be factored by [`factor_loaded`] with a
/// backend whose [`rejects_non_finite`](SvdBackend::rejects_non_finite) is `defer`.
///
/// An f32 (f64) weight read as f32 (f64) is viewed in place in the mapped file, without a copy;
/// release its pages with [`Checkpoint::release`] once the layer is done. Any other weight is
/// decoded into `buffer`'s allocation (taken; get it back with [`done_with`]) and its pages are
/// released at once, so that the decoded copy is the only one counted in the resident set.
///
/// With `defer`, the weight is not scanned for NaN and infinities here: the factorisation finds
/// them (one pass over the weight instead of two) and [`factor_loaded`] reports them.
pub(crate) fn load<T: Real>(
    ck: &Checkpoint,
    site: &Site,
    t: Tensors,
    buffer: &mut Vec<T>,
    defer: bool,
) -> Result<Conv2dWeights<T>> {
    let weight = &ck.tensors[t.weight];
    ck.populate(weight);
    let storage = match ck.view::<T>(weight) {
        Some(view) => view,
        None => {
            let mut w = std::mem::take(buffer);
            ck.read_real_into(weight, &mut w)?;
            ck.release(weight);
            Storage::Owned(w)
        }
    };
    let bias = t.bias.map(|b| ck.read_real::<T>(&ck.tensors[b])).transpose()?;
    let builder = Conv2dWeights::builder_from(storage, site.found.dims)
        .name(site.name())
        .maybe_bias(bias)
        .geometry(site.found.geometry);
    let builder = if defer { builder.defer_weight_finiteness() } else { builder };
    builder.build().map_err(|e| in_file(&ck.path, e))
}

/// Factors a layer read by [`load`]. When the factorisation fails on a weight whose scan was
/// deferred, the weight is scanned then, so that a NaN or an infinity is reported as
/// [`Error::NonFinite`] naming the element, exactly as an eager scan would have; a success
/// proves the weight finite.
pub(crate) fn factor_loaded<'a, T: Real>(
    path: &Path,
    layer: &'a Conv2dWeights<T>,
    scheme: &dyn Scheme<T>,
    deferred: bool,
) -> Result<Box<dyn Factored<T> + 'a>> {
    scheme.factor(layer).map_err(|e| {
        let scanned =
            if deferred { crate::weights::check_finite(layer.name(), "weight", layer.weight()) } else { Ok(()) };
        in_file(path, scanned.err().unwrap_or(e))
    })
}

/// [`convert::analyse`] of a layer factored by each of its schemes.
pub(crate) fn analyse_all<T: Real>(
    site: &Site,
    factored: &[Box<dyn Factored<T> + '_>],
    options: &ConvertOptions,
) -> Result<convert::Analysis> {
    let refs: Vec<&dyn Factored<T>> = factored.iter().map(|f| &**f as &dyn Factored<T>).collect();
    convert::analyse(site, &refs, options)
}

/// Gives a finished layer's decoding buffer back to `buffer` (if it has one) and releases the
/// layer's pages of the input.
pub(crate) fn done_with<T: Real>(ck: &Checkpoint, t: Tensors, layer: Conv2dWeights<T>, buffer: &mut Vec<T>) {
    if let Some(w) = layer.into_weight_buffer() {
        *buffer = w;
    }
    ck.release(&ck.tensors[t.weight]);
}

/// Cost and modeled time of every linear layer: a 2-D float `<name>.weight` `[out, in]` (with
/// `<name>.bias`), at its declared positions per image (default 1).
///
/// # Errors
/// [`Error::NoMatch`] for a positions pattern that matches no linear layer;
/// [`Error::InvalidParameter`] for zero positions.
fn linear_cost(ck: &Checkpoint, model: &TimeModel, selection: &Selection) -> Result<convert::Fixed> {
    // Each layer's name, as the one key its patterns match.
    let linear: Vec<([String; 1], _)> = ck
        .tensors
        .iter()
        .filter(|t| t.shape.len() == 2 && t.float_dtype().is_some())
        .filter_map(|t| t.name.strip_suffix(".weight").map(|name| ([name.to_string()], t)))
        .collect();
    for (pattern, positions) in &selection.positions {
        if *positions == 0 {
            let context = format!("linear layers `{pattern}`");
            return Err(Error::InvalidParameter { context, what: "positions", value: 0.0, expected: "at least 1" });
        }
        if !linear.iter().any(|(keys, _)| convert::matches_any(pattern, keys)) {
            let names: Vec<&str> = linear.iter().map(|([n], _)| n.as_str()).collect();
            let available = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            let (file, pattern) = (ck.path.clone(), pattern.clone());
            return Err(Error::NoMatch { file, option: "linear_positions", pattern, available });
        }
    }
    let mut fixed = convert::Fixed::default();
    for (keys, t) in &linear {
        let bias = format!("{}.bias", keys[0]);
        let mut c = cost::linear(t.shape[0], t.shape[1], ck.tensors.iter().any(|b| b.name == bias));
        let positions = Selection::last_match(&selection.positions, keys).copied().unwrap_or(1);
        c.macs = c.macs.saturating_mul(positions as u64);
        fixed.cost = fixed.cost + c;
        fixed.time += model.node(&TimedNode::MatMul { m: positions, k: t.shape[1], n: t.shape[0] });
    }
    Ok(fixed)
}

/// The default [`ConvertOptions::memory_budget`] for `data_len` bytes of tensor data.
fn default_budget(data_len: u64) -> usize {
    usize::try_from(data_len / 2).unwrap_or(usize::MAX).max(64 << 20)
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::SquareRoot => "sqrt",
        Split::Pointwise => "pointwise",
        Split::Depthwise => "depthwise",
    }
}

/// Converts an opened checkpoint (see [`convert_file`](super::convert_file)).
pub(crate) fn convert<T: Real>(
    input: &Path,
    output: &Path,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Summary> {
    atomic::check_output(input, output, options.force)?;
    // A checkpoint stores DAC's pair as one depthwise weight of multiplier r (what its records
    // describe and the README's loader builds), Network Decoupling as its chain: times are
    // modeled in those layouts.
    let options = &options.clone().layout(Layout::Fused);
    if let RankSource::Policy(policy) = options.ranks {
        policy.validate("rank policy").map_err(|e| in_file(input, e))?;
    }
    let ck = Checkpoint::open(input)?;
    let (found, tensors) = discover(&ck)?;
    let sites =
        convert::select(found, &options.selection, options.input_size, &ck.path, true, options.ranks.is_target())
            .map_err(|e| in_file(&ck.path, e))?;
    let linear = linear_cost(&ck, &options.time, &options.selection)?;
    for (s, &t) in sites.iter().zip(&tensors) {
        if matches!(s.fate, convert::Fate::Candidate { .. }) {
            check_dtypes(&ck, t)?;
        }
    }
    let backend = convert::backend::<T>(options.svd);
    let fit = convert::fit_in_use(&sites, options);
    let schemes = convert::Schemes::new(fit, options, &*backend);
    let job = Job {
        ck: &ck,
        sites: &sites,
        tensors: &tensors,
        options,
        schemes: &schemes,
        fit,
        defer: backend.rejects_non_finite(),
    };
    let needs = convert::needs_analysis(&sites, options).map_err(|e| in_file(&ck.path, e))?;
    let kept = job.keep_within_budget(&needs)?;
    let mut factored: Vec<Vec<Box<dyn Factored<T> + '_>>> = (0..sites.len()).map(|_| Vec::new()).collect();
    let analyses = job.analyse(&needs, &kept, &mut factored, progress)?;
    let (decisions, plan) = convert::decide(&sites, &analyses, options, linear).map_err(|e| in_file(&ck.path, e))?;
    let header = job.header(&decisions)?;
    let mut out = AtomicFile::create(output, options.force)?;
    write_all(out.writer(), &header, output)?;
    let summary = job.summary(input, output, linear, plan, backend.name());
    let summary = job.write(&decisions, factored, &mut out, output, summary, progress)?;
    out.commit(ck.permissions.clone())?;
    progress(&Progress { phase: Phase::Finished, item: "", done: ck.data_len(), total: ck.data_len() });
    Ok(summary)
}

/// One conversion's inputs, shared by its phases.
pub(crate) struct Job<'j, T: Real> {
    pub ck: &'j Checkpoint,
    pub sites: &'j [Site],
    pub tensors: &'j [Tensors],
    pub options: &'j ConvertOptions,
    pub schemes: &'j convert::Schemes<'j, T>,
    /// The fit of the conversion ([`convert::fit_in_use`]).
    pub fit: Fit,
    /// Whether weights are loaded without a finiteness scan (the backend finds non-finite values).
    pub defer: bool,
}

impl<'j, T: Real> Job<'j, T> {
    /// Loads the layers that need analysis, as far as the memory budget allows: they are kept
    /// (with their factorisations) until written; the rest are loaded again then.
    fn keep_within_budget(&self, needs: &[bool]) -> Result<Vec<Option<Conv2dWeights<T>>>> {
        let budget = self.options.memory_budget.unwrap_or_else(|| default_budget(self.ck.data_len()));
        let mut kept_bytes = 0usize;
        let mut kept = Vec::with_capacity(self.sites.len());
        for (i, s) in self.sites.iter().enumerate() {
            let bytes = s.found.dims.iter().product::<usize>().saturating_mul(std::mem::size_of::<T>());
            let keep = needs[i] && kept_bytes.saturating_add(bytes) <= budget;
            kept.push(if keep {
                kept_bytes += bytes;
                Some(load::<T>(self.ck, s, self.tensors[i], &mut Vec::new(), self.defer)?)
            } else {
                None
            });
        }
        Ok(kept)
    }

    /// Factors the layers that need analysis, keeping the factorisations of the kept layers.
    fn analyse<'k>(
        &self,
        needs: &[bool],
        kept: &'k [Option<Conv2dWeights<T>>],
        factored: &mut [Vec<Box<dyn Factored<T> + 'k>>],
        progress: &mut dyn FnMut(&Progress<'_>),
    ) -> Result<Vec<Option<Analysis>>>
    where
        'j: 'k,
    {
        let path = &self.ck.path;
        let (total, mut done) = (needs.iter().filter(|&&n| n).count() as u64, 0);
        let mut scratch = Vec::new();
        let mut analyses = Vec::with_capacity(self.sites.len());
        let mut in_parallel = self.analyse_kept(needs, kept);
        for (i, s) in self.sites.iter().enumerate() {
            if !needs[i] {
                analyses.push(None);
                continue;
            }
            progress(&Progress { phase: Phase::Analysing, item: s.name(), done, total });
            let analysis = match in_parallel[i].take() {
                Some(result) => {
                    let (fs, a) = result?;
                    factored[i] = fs;
                    a
                }
                None => {
                    let layer = load::<T>(self.ck, s, self.tensors[i], &mut scratch, self.defer)?;
                    let fs = self.factor_all(s, &layer)?;
                    let a = analyse_all(s, &fs, self.options).map_err(|e| in_file(path, e))?;
                    drop(fs);
                    done_with(self.ck, self.tensors[i], layer, &mut scratch);
                    a
                }
            };
            analyses.push(Some(analysis));
            done += 1;
        }
        Ok(analyses)
    }

    /// The kept layers that need analysis, factored by every scheme they allow and analysed, in
    /// parallel (one layer per task; the rest are loaded again one at a time by
    /// [`analyse`](Self::analyse)).
    #[allow(clippy::type_complexity)]
    fn analyse_kept<'k>(
        &self,
        needs: &[bool],
        kept: &'k [Option<Conv2dWeights<T>>],
    ) -> Vec<Option<Result<(Vec<Box<dyn Factored<T> + 'k>>, Analysis)>>> {
        let one = |(i, (layer, s)): (usize, (&'k Option<Conv2dWeights<T>>, &Site))| {
            let layer = layer.as_ref().filter(|_| needs[i])?;
            Some(self.factor_all(s, layer).and_then(|fs| {
                let a = analyse_all(s, &fs, self.options).map_err(|e| in_file(&self.ck.path, e))?;
                Ok((fs, a))
            }))
        };
        kept.par_iter().zip(self.sites.par_iter()).enumerate().map(one).collect()
    }

    /// `layer` factored by each scheme its site allows.
    fn factor_all<'a>(&self, site: &Site, layer: &'a Conv2dWeights<T>) -> Result<Vec<Box<dyn Factored<T> + 'a>>> {
        let schemes = convert::kinds(site, self.options).into_iter().map(|k| self.schemes.get(k));
        schemes.map(|scheme| factor_loaded(&self.ck.path, layer, scheme, self.defer)).collect()
    }

    /// The dtype a converted layer's factors are written in.
    fn out_dtype(&self, i: usize) -> FloatDtype {
        let own = self.ck.tensors[self.tensors[i].weight].float_dtype();
        self.options.output_dtype.or(own).unwrap_or(FloatDtype::F32)
    }

    /// The output header: every tensor in the input's order, each converted layer's factors in
    /// place of its weight (its bias moved to the last factor), and the metadata records.
    fn header(&self, decisions: &[Decision]) -> Result<Vec<u8>> {
        let ck = self.ck;
        let mut metadata = ck.metadata.clone();
        let mut entries: Vec<OutEntry> = Vec::with_capacity(ck.tensors.len() + 2 * self.sites.len());
        let by_weight: BTreeMap<usize, usize> = self.tensors.iter().enumerate().map(|(i, t)| (t.weight, i)).collect();
        let moved = self.moved_biases(decisions);
        for (ti, t) in ck.tensors.iter().enumerate().filter(|(ti, _)| !moved.contains(ti)) {
            match by_weight.get(&ti).map(|&i| (i, &decisions[i])) {
                Some((i, Decision::Convert { scheme, rank, .. })) => {
                    entries.extend(self.factor_entries(i, *scheme, *rank));
                    let site = &self.sites[i];
                    let record = self.record(site, *scheme, *rank).to_json();
                    metadata.insert(format!("dac.layer.{}", site.name()), record);
                }
                _ => entries.push(OutEntry {
                    name: t.name.clone(),
                    dtype: t.dtype.clone(),
                    shape: t.shape.clone(),
                    nbytes: t.end - t.begin,
                }),
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(e) = entries.iter().find(|e| !seen.insert(e.name.as_str())) {
            let reason = "the converted layer's new tensor name already exists in the input";
            return Err(format_error(&ck.path, Some(&e.name), reason));
        }
        metadata.insert("dac.format".to_string(), FORMAT_VERSION.to_string());
        metadata.insert("dac.version".to_string(), env!("CARGO_PKG_VERSION").to_string());
        Ok(header_block(&metadata, &entries))
    }

    /// The biases of converted layers (they move to the last factor).
    fn moved_biases(&self, decisions: &[Decision]) -> Vec<usize> {
        let converted = |(t, d): (&Tensors, &Decision)| matches!(d, Decision::Convert { .. }).then_some(t.bias);
        self.tensors.iter().zip(decisions).filter_map(converted).flatten().collect()
    }

    /// The header entries of layer `i`'s factors at `rank`.
    fn factor_entries(&self, i: usize, scheme: SchemeKind, rank: usize) -> Vec<OutEntry> {
        let (site, dt) = (&self.sites[i], self.out_dtype(i));
        let specs = scheme.factor_specs(&site.shape(), &site.found.geometry, rank);
        let last = specs.len() - 1;
        let mut entries = Vec::with_capacity(specs.len() + 1);
        for (k, FactorSpec { role, dims: d, .. }) in specs.into_iter().enumerate() {
            let mut push = |suffix: &str, shape: Vec<usize>| {
                let nbytes = shape.iter().product::<usize>() * dt.size();
                let name = format!("{}.{role}.{suffix}", site.name());
                entries.push(OutEntry { name, dtype: dt.name().to_string(), shape, nbytes });
            };
            push("weight", d.to_vec());
            if k == last && site.found.has_bias() {
                push("bias", vec![site.found.dims[0]]);
            }
        }
        entries
    }

    fn record(&self, site: &Site, scheme: SchemeKind, rank: usize) -> LayerRecord {
        let shape = site.shape();
        let dac = scheme == SchemeKind::Dac;
        let specs = if dac { Vec::new() } else { scheme.factor_specs(&shape, &site.found.geometry, rank) };
        LayerRecord {
            name: site.name().to_string(),
            rank,
            groups: shape.groups,
            scheme: scheme.name().to_string(),
            split: dac.then(|| split_name(self.options.split).to_string()),
            factors: specs.iter().map(FactorRecord::of).collect(),
            in_channels: shape.in_channels,
            out_channels: shape.out_channels,
            kernel: [shape.kh, shape.kw],
            bias: site.found.has_bias(),
            fit: self.fit.to_string(),
        }
    }
}

/// Reused buffers of the writing phase, and the run of unchanged tensors not yet copied.
struct Writer<T: Real> {
    /// The decoding buffer of layers that were not kept.
    scratch: Vec<T>,
    workspace: Workspace<T>,
    /// Encoded bytes of one tensor.
    buf: Vec<u8>,
    /// Data offsets of consecutive unchanged tensors, copied file to file in one go.
    run: Option<(usize, usize)>,
}

impl<T: Real> Writer<T> {
    fn flush_run(&mut self, ck: &Checkpoint, out: &mut AtomicFile, output: &Path) -> Result<()> {
        match self.run.take() {
            Some((begin, end)) => ck.copy_data(begin, end, out.file()?, output),
            None => Ok(()),
        }
    }
    fn copy(
        &mut self,
        ck: &Checkpoint,
        (begin, end): (usize, usize),
        out: &mut AtomicFile,
        output: &Path,
    ) -> Result<()> {
        match self.run {
            Some((b, e)) if e == begin => self.run = Some((b, end)),
            _ => {
                self.flush_run(ck, out, output)?;
                self.run = Some((begin, end));
            }
        }
        Ok(())
    }
    /// Writes one tensor's values in `dt`.
    fn put(
        &mut self,
        ck: &Checkpoint,
        name: &str,
        values: &[T],
        dt: FloatDtype,
        out: &mut AtomicFile,
        output: &Path,
    ) -> Result<()> {
        write_values(values, dt, &mut self.buf, out.writer()).map_err(|e| match e {
            Ok(i) => format_error(&ck.path, Some(name), format!("value {} at index {i} overflows {dt}", values[i])),
            Err(e) => Error::Io { path: output.to_path_buf(), action: "write", source: e },
        })
    }
}

impl<T: Real> Job<'_, T> {
    /// Streams every tensor into `out` (after the header), converting the layers decided so, and
    /// adds each layer and tensor to `summary`.
    fn write<'k>(
        &self,
        decisions: &[Decision],
        mut factored: Vec<Vec<Box<dyn Factored<T> + 'k>>>,
        out: &mut AtomicFile,
        output: &Path,
        mut summary: Summary,
        progress: &mut dyn FnMut(&Progress<'_>),
    ) -> Result<Summary> {
        let ck = self.ck;
        let by_weight: BTreeMap<usize, usize> = self.tensors.iter().enumerate().map(|(i, t)| (t.weight, i)).collect();
        let moved = self.moved_biases(decisions);
        let mut w = Writer { scratch: Vec::new(), workspace: Workspace::new(), buf: Vec::new(), run: None };
        for (ti, t) in ck.tensors.iter().enumerate() {
            progress(&Progress { phase: Phase::Writing, item: &t.name, done: t.begin as u64, total: ck.data_len() });
            if moved.contains(&ti) {
                summary.removed.push(t.name.clone());
                continue;
            }
            match by_weight.get(&ti).map(|&i| (i, &decisions[i])) {
                Some((i, Decision::Convert { scheme, rank, layout })) => {
                    w.flush_run(ck, out, output)?;
                    let kept = std::mem::take(&mut factored[i]).into_iter().find(|f| f.scheme() == *scheme);
                    summary.converted.push(self.write_layer(
                        i,
                        (*scheme, *rank, *layout),
                        kept,
                        &mut w,
                        out,
                        output,
                    )?);
                    summary.removed.push(t.name.clone());
                }
                other => {
                    w.copy(ck, (t.begin, t.end), out, output)?;
                    summary.copied_tensors += 1;
                    if let Some((i, Decision::Skip(reason))) = other {
                        let entry = convert::skipped(&self.sites[i], reason.clone(), &self.options.time)
                            .map_err(|e| in_file(&ck.path, e))?;
                        summary.skipped.push(entry);
                    }
                }
            }
        }
        w.flush_run(ck, out, output)?;
        Ok(summary)
    }

    /// The summary before any layer is written.
    fn summary(
        &self,
        input: &Path,
        output: &Path,
        linear: convert::Fixed,
        plan: Option<Plan>,
        svd: &'static str,
    ) -> Summary {
        Summary {
            input: input.to_path_buf(),
            output: output.to_path_buf(),
            input_size: self.options.input_size,
            converted: Vec::new(),
            skipped: Vec::new(),
            removed: Vec::new(),
            copied_tensors: 0,
            linear: linear.cost,
            linear_time: Some(linear.time),
            time_model: self.options.time.describe(),
            time_model_other_cpu: self.options.time.unlike(&crate::time::Cpu::this()),
            uncounted: Vec::new(),
            unmodeled: Vec::new(),
            subgraph_nodes: Vec::new(),
            other_weights: other_weights(self.ck),
            plan,
            svd,
            fit: self.fit,
            input_moments: self.options.input_moments.is_some(),
            layout: None,
            assumption: Some(ASSUMPTION),
        }
    }

    /// Factors layer `i` (unless its factorisation was kept), writes its factors and reports it.
    fn write_layer(
        &self,
        i: usize,
        (scheme, rank, layout): (SchemeKind, usize, Option<Layout>),
        kept: Option<Box<dyn Factored<T> + '_>>,
        w: &mut Writer<T>,
        out: &mut AtomicFile,
        output: &Path,
    ) -> Result<convert::ConvertedLayer> {
        let (site, path) = (&self.sites[i], &self.ck.path);
        let (written, errors) = match kept {
            Some(f) => self.emit(i, &*f, rank, w, out, output)?,
            None => {
                let layer = load::<T>(self.ck, site, self.tensors[i], &mut w.scratch, self.defer)?;
                let f = factor_loaded(path, &layer, self.schemes.get(scheme), self.defer)?;
                let result = self.emit(i, &*f, rank, w, out, output)?;
                drop(f);
                if let Some(b) = layer.into_weight_buffer() {
                    w.scratch = b;
                }
                result
            }
        };
        // Kept or not, viewed in place or decoded: done with this layer's input pages.
        self.ck.release(&self.ck.tensors[self.tensors[i].weight]);
        let dtype = self.out_dtype(i).name().to_string();
        convert::converted(site, (scheme, rank, layout), errors, dtype, written, &self.options.time)
            .map_err(|e| in_file(path, e))
    }

    /// Writes layer `i`'s factors at `rank`; returns their tensor names and the error table.
    fn emit(
        &self,
        i: usize,
        f: &dyn Factored<T>,
        rank: usize,
        w: &mut Writer<T>,
        out: &mut AtomicFile,
        output: &Path,
    ) -> Result<(Vec<String>, (f64, f64))> {
        let factors = f.factors(rank, &mut w.workspace).map_err(|e| in_file(&self.ck.path, e))?;
        let dt = self.out_dtype(i);
        let mut written = Vec::with_capacity(factors.len() + 1);
        for factor in &factors {
            let base = format!("{}.{}", self.sites[i].name(), factor.role);
            let weight = format!("{base}.weight");
            w.put(self.ck, &weight, factor.conv.weight(), dt, out, output)?;
            written.push(weight);
            if let Some(bias) = factor.conv.bias() {
                let name = format!("{base}.bias");
                w.put(self.ck, &name, bias, dt, out, output)?;
                written.push(name);
            }
        }
        w.workspace.recycle(factors);
        Ok((written, f.error_at(rank)))
    }
}
