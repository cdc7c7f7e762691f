//! [`OnnxRuntime`]: timing in onnxruntime's shared library, loaded at run time.

use super::{Forward, Loaded, Runtime};
use crate::error::{Error, Result};
use crate::exec::Tensor4;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The library loaded in this process (onnxruntime can be loaded once).
static LOADED: OnceLock<PathBuf> = OnceLock::new();

/// onnxruntime's CPU execution provider, as `bench/ortutil.py` sets it up: all graph
/// optimisations, `threads` intra-op threads, one inter-op thread, sequential execution.
///
/// Each [`time_pair`](Runtime::time_pair) creates both sessions, runs each twice to warm up,
/// then alternates runs of the two until both have at least `min_runs` runs and the pair has
/// taken `budget`; the times are the medians.
#[derive(Debug)]
pub struct OnnxRuntime {
    threads: usize,
    input_size: Option<(usize, usize)>,
    /// Each pair's time budget.
    pub budget: Duration,
    /// Each model's fewest timed runs.
    pub min_runs: usize,
    version: String,
}

impl OnnxRuntime {
    /// Loads onnxruntime's shared library from `library` (for instance
    /// `onnxruntime/capi/libonnxruntime.so.1.32.0` inside the Python wheel), `threads`
    /// intra-op threads; `input_size` (HxW) fills a 4-D input's dynamic spatial dimensions (a
    /// dynamic batch is 1).
    ///
    /// # Errors
    /// [`Error::Runtime`] when the library cannot be loaded, or another library was loaded
    /// before in this process.
    pub fn load(library: &Path, threads: usize, input_size: Option<(usize, usize)>) -> Result<Self> {
        let err = |reason: String| Error::Runtime { runtime: library.display().to_string(), reason };
        if threads == 0 {
            return Err(err("threads must be at least 1".into()));
        }
        // Checked here first: ort 2.0.0-rc.12 deadlocks reporting a library it cannot load.
        let version = probe(library).map_err(err)?;
        let loaded = LOADED.get_or_init(|| library.to_path_buf());
        if loaded != library {
            return Err(err(format!("another onnxruntime library, `{}`, is loaded in this process", loaded.display())));
        }
        let builder = ort::init_from(library).map_err(|e| err(e.to_string()))?;
        builder.with_name("dac").commit();
        Ok(Self { threads, input_size, budget: Duration::from_secs(2), min_runs: 5, version })
    }

    fn session(&self, model: &[u8]) -> Result<Session> {
        let built = Session::builder()
            .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All).map_err(Into::into))
            .and_then(|b| b.with_intra_threads(self.threads).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|b| b.with_parallel_execution(false).map_err(Into::into))
            .and_then(|mut b| b.commit_from_memory(model));
        built.map_err(|e| self.error(format!("cannot load the model: {e}")))
    }

    fn error(&self, reason: String) -> Error {
        Error::Runtime { runtime: self.version.clone(), reason }
    }

    /// One tensor per model input, of its declared type and shape, filled with a fixed pattern.
    fn inputs(&self, session: &Session) -> Result<Vec<(String, DynValue)>> {
        session.inputs().iter().map(|i| Ok((i.name().to_string(), self.input(i.name(), i.dtype())?))).collect()
    }

    fn input(&self, name: &str, dtype: &ValueType) -> Result<DynValue> {
        let ValueType::Tensor { ty, shape, .. } = dtype else {
            return Err(self.error(format!("input `{name}` is {dtype}; only tensor inputs can be fed")));
        };
        let dims = self.dims(name, shape)?;
        let n: usize = dims.iter().product();
        let pattern = |i: usize| ((i * 7919) % 2003) as f64 / 1001.0 - 1.0;
        let value = match ty {
            TensorElementType::Float32 => {
                Tensor::from_array((dims, (0..n).map(|i| pattern(i) as f32).collect::<Vec<_>>())).map(|t| t.into_dyn())
            }
            TensorElementType::Float64 => {
                Tensor::from_array((dims, (0..n).map(pattern).collect::<Vec<_>>())).map(|t| t.into_dyn())
            }
            TensorElementType::Int64 => Tensor::from_array((dims, vec![0i64; n])).map(|t| t.into_dyn()),
            other => {
                return Err(self.error(format!(
                    "input `{name}` has element type {other}; float32, float64 and int64 inputs can be fed"
                )))
            }
        };
        value.map_err(|e| self.error(format!("input `{name}`: {e}")))
    }

    /// A declared shape with its dynamic dimensions filled: the batch 1, the spatial ones of a
    /// 4-D input from `input_size`.
    fn dims(&self, name: &str, shape: &[i64]) -> Result<Vec<usize>> {
        let spatial = |i: usize| self.input_size.map(|(h, w)| if i == 2 { h } else { w });
        let dim = |(i, &d): (usize, &i64)| match (usize::try_from(d), i) {
            (Ok(d), _) => Ok(d),
            (Err(_), 0) => Ok(1),
            (Err(_), 2 | 3) if shape.len() == 4 => spatial(i).ok_or_else(|| {
                self.error(format!("input `{name}` has a dynamic size (shape {shape:?}); give --input HxW"))
            }),
            (Err(_), _) => Err(self.error(format!("input `{name}` has dynamic dimension {i} (shape {shape:?})"))),
        };
        shape.iter().enumerate().map(dim).collect()
    }

    fn run(&self, session: &mut Session, inputs: &[(String, DynValue)]) -> Result<Duration> {
        let feed: Vec<(&str, &DynValue)> = inputs.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let start = Instant::now();
        session.run(feed).map_err(|e| self.error(format!("run failed: {e}")))?;
        Ok(start.elapsed())
    }
}

impl Runtime for OnnxRuntime {
    fn describe(&self) -> String {
        let s = if self.threads == 1 { "" } else { "s" };
        format!("{}, {} thread{s}", self.version, self.threads)
    }

    fn time_pair(&mut self, before: &[u8], after: &[u8]) -> Result<(Duration, Duration)> {
        let mut sessions = [self.session(before)?, self.session(after)?];
        let inputs = [self.inputs(&sessions[0])?, self.inputs(&sessions[1])?];
        let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        for (s, x) in sessions.iter_mut().zip(&inputs) {
            for _ in 0..2 {
                self.run(s, x)?;
            }
        }
        let start = Instant::now();
        while times[0].len() < self.min_runs.max(1) || start.elapsed() < self.budget {
            for ((s, x), t) in sessions.iter_mut().zip(&inputs).zip(&mut times) {
                t.push(self.run(s, x)?);
            }
            if times[0].len() >= 1000 {
                break;
            }
        }
        Ok((median(&mut times[0]), median(&mut times[1])))
    }
}

impl Forward for OnnxRuntime {
    fn load(&mut self, model: &[u8]) -> Result<Box<dyn Loaded + '_>> {
        Ok(Box::new(OrtModel { session: self.session(model)?, runtime: self }))
    }
}

/// A model loaded in onnxruntime's CPU execution provider, as [`OnnxRuntime`] sets it up.
struct OrtModel<'r> {
    session: Session,
    runtime: &'r OnnxRuntime,
}

impl Loaded for OrtModel<'_> {
    fn run(&mut self, input_name: &str, input: &Tensor4<f32>, outputs: &[String]) -> Result<Vec<Tensor4<f32>>> {
        let err = |reason: String| self.runtime.error(reason);
        let value = Tensor::from_array((input.dims().to_vec(), input.as_slice().to_vec()))
            .map_err(|e| err(format!("input `{input_name}`: {e}")))?
            .into_dyn();
        let ran = self.session.run(vec![(input_name, &value)]).map_err(|e| err(format!("run failed: {e}")))?;
        let mut out = Vec::with_capacity(outputs.len());
        for name in outputs {
            let v = ran.get(name).ok_or_else(|| err(format!("the model has no output `{name}`")))?;
            let (shape, data) =
                v.try_extract_tensor::<f32>().map_err(|e| err(format!("output `{name}` is not float32: {e}")))?;
            let dims: Vec<usize> = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
            let dims: [usize; 4] = dims
                .try_into()
                .map_err(|d| err(format!("output `{name}` has shape {d:?}; a 4-D tensor was expected")))?;
            out.push(Tensor4::new(data.to_vec(), dims)?);
        }
        Ok(out)
    }
}

/// The oldest onnxruntime whose C API `ort` 2.0.0-rc.12 uses (1.24).
const MIN_MINOR: u32 = 24;

/// `onnxruntime 1.32.0`: the version `library` reports, if it loads, is onnxruntime, and is
/// at least 1.24.
fn probe(library: &Path) -> std::result::Result<String, String> {
    if !library.is_file() {
        return Err("no such file".into());
    }
    // SAFETY: loading a library runs its initialisers; this is the onnxruntime library the
    // user asked to time models in, which is what it will be loaded for.
    let lib = unsafe { libloading::Library::new(library) }.map_err(|e| format!("cannot load: {e}"))?;
    type GetApiBase = unsafe extern "system" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: `OrtGetApiBase` has this signature in every onnxruntime release.
    let get: libloading::Symbol<'_, GetApiBase> = unsafe { lib.get(b"OrtGetApiBase") }
        .map_err(|_| "no `OrtGetApiBase`: not an onnxruntime library".to_string())?;
    // SAFETY: the library is onnxruntime; its API base and version string are static.
    let version = unsafe {
        let base = get();
        if base.is_null() {
            return Err("`OrtGetApiBase` returned null".into());
        }
        std::ffi::CStr::from_ptr(((*base).GetVersionString)()).to_string_lossy().into_owned()
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(1), Some(minor)) if minor >= MIN_MINOR => Ok(format!("onnxruntime {version}")),
        _ => Err(format!("onnxruntime {version}: --measure needs onnxruntime 1.{MIN_MINOR} or newer")),
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2
    }
}
