//! Status codes, the per-thread last error, and the guard every entry point runs in: it
//! catches panics (none crosses the C boundary) and turns errors into a status and a message.

use std::cell::{Cell, RefCell};
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use ditail_app::naming::{Naming, reword};
use ditail_models::ModelError;
use ditail_pipeline::PipelineError;

/// What a call did: `DITAIL_STATUS_OK`, or why it failed (the message is in
/// `ditail_last_error()`). New codes may be added; treat unknown ones as failures.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// An argument is unusable: NULL where a value is needed, a `struct_size` this library
    /// does not know, text that is not UTF-8, an image buffer of zero or too many pixels.
    InvalidArgument = 1,
    /// A handle is not a live handle of the expected kind: already freed, or never one.
    InvalidHandle = 2,
    /// A setting is out of range (a NaN or infinite scale, 0 steps, a ratio outside
    /// [0, 1], a size that is not a multiple of 8, a blank mask), checked before any
    /// network runs.
    Settings = 3,
    /// A model, VAE, LoRA, image or latents file (or hub repo) does not exist.
    NotFound = 4,
    /// Reading or writing a file failed (permissions, a full disk, ...).
    Io = 5,
    /// A file exists but cannot be used: not a valid safetensors, image or latents file, a
    /// pickle, an architecture the method cannot use (SD2, SD3, an inpainting model, ...),
    /// weights or LoRA keys that do not fit the model.
    UnsupportedFile = 6,
    /// An inversion does not fit the run it is used for (step counts, mask shape).
    Incompatible = 7,
    /// The backend is not in this build, or no device of it answered.
    Backend = 8,
    /// NaN or infinite values appeared while running (f16 overflow, or broken weights).
    NonFinite = 9,
    /// The progress callback returned `false`.
    Cancelled = 10,
    /// A bug in ditail: a panic was caught at the boundary. The message says where.
    Internal = 11,
}

impl Status {
    /// A short, static, English name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::InvalidArgument => "invalid argument",
            Status::InvalidHandle => "invalid handle",
            Status::Settings => "invalid settings",
            Status::NotFound => "not found",
            Status::Io => "input/output error",
            Status::UnsupportedFile => "unsupported file",
            Status::Incompatible => "incompatible inversion",
            Status::Backend => "backend unavailable",
            Status::NonFinite => "non-finite values",
            Status::Cancelled => "cancelled",
            Status::Internal => "internal error",
        }
    }

    /// The same names as NUL-terminated C strings (for `ditail_status_string`).
    pub(crate) fn as_c_str(self) -> &'static std::ffi::CStr {
        match self {
            Status::Ok => c"ok",
            Status::InvalidArgument => c"invalid argument",
            Status::InvalidHandle => c"invalid handle",
            Status::Settings => c"invalid settings",
            Status::NotFound => c"not found",
            Status::Io => c"input/output error",
            Status::UnsupportedFile => c"unsupported file",
            Status::Incompatible => c"incompatible inversion",
            Status::Backend => c"backend unavailable",
            Status::NonFinite => c"non-finite values",
            Status::Cancelled => c"cancelled",
            Status::Internal => c"internal error",
        }
    }

    /// The status with this code, if there is one.
    pub fn from_code(code: i32) -> Option<Status> {
        const ALL: [Status; 12] = [
            Status::Ok,
            Status::InvalidArgument,
            Status::InvalidHandle,
            Status::Settings,
            Status::NotFound,
            Status::Io,
            Status::UnsupportedFile,
            Status::Incompatible,
            Status::Backend,
            Status::NonFinite,
            Status::Cancelled,
            Status::Internal,
        ];
        ALL.into_iter().find(|s| *s as i32 == code)
    }
}

/// A failed call: its status and the message `ditail_last_error()` returns.
#[derive(Debug)]
pub(crate) struct Error {
    pub status: Status,
    pub message: String,
}

impl Error {
    /// The shared checks name settings by the command's flags; a C caller reads them as
    /// the header's words (`--inv-steps 4` -> `inversion steps 4`).
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: reword(&message.into(), Naming::Labels),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Status::InvalidArgument, message)
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

fn io_status(kind: std::io::ErrorKind) -> Status {
    match kind {
        std::io::ErrorKind::NotFound => Status::NotFound,
        _ => Status::Io,
    }
}

/// `NotFound` when `path` does not exist, else `UnsupportedFile` (for readers that report
/// both as one error kind).
fn file_status(path: &std::path::Path) -> Status {
    match path.try_exists() {
        Ok(false) => Status::NotFound,
        _ => Status::UnsupportedFile,
    }
}

impl From<ModelError> for Error {
    fn from(e: ModelError) -> Self {
        let status = match &e {
            ModelError::Io { source, .. } => io_status(source.kind()),
            ModelError::NotFound { .. } | ModelError::Hub { .. } => Status::NotFound,
            ModelError::InvalidInput { .. } | ModelError::Tokenizer(_) => Status::Settings,
            ModelError::Safetensors { .. }
            | ModelError::UnsupportedDtype { .. }
            | ModelError::NonFiniteWeight { .. }
            | ModelError::Config { .. }
            | ModelError::MissingFile { .. }
            | ModelError::WeightsMismatch { .. }
            | ModelError::Pickle { .. }
            | ModelError::Lora { .. }
            | ModelError::UnsupportedArchitecture { .. } => Status::UnsupportedFile,
            ModelError::NoSuchDevice { .. } => Status::Backend,
            _ => Status::UnsupportedFile,
        };
        Error::new(status, e.to_string())
    }
}

impl From<ditail_app::AppError> for Error {
    fn from(e: ditail_app::AppError) -> Self {
        use ditail_app::AppError;
        match e {
            AppError::Invalid(message) => Error::new(Status::Settings, message),
            AppError::Context { context, source } => Error::from(*source).context(context),
            AppError::Pipeline(e) => e.into(),
            AppError::Model(e) => e.into(),
            AppError::Io(e) => Error::new(io_status(e.kind()), e.to_string()),
            other => Error::new(Status::Io, other.to_string()),
        }
    }
}

impl From<PipelineError> for Error {
    fn from(e: PipelineError) -> Self {
        let e = match e {
            PipelineError::Model(m) => return m.into(),
            e => e,
        };
        let status = match &e {
            PipelineError::Settings(_) => Status::Settings,
            PipelineError::Image { path, .. } | PipelineError::LatentsFile { path, .. } => {
                file_status(path)
            }
            PipelineError::ImageTooLarge { .. } => Status::UnsupportedFile,
            PipelineError::InversionMismatch { .. } => Status::Incompatible,
            PipelineError::NonFiniteLatents { .. } => Status::NonFinite,
            PipelineError::Cancelled => Status::Cancelled,
            PipelineError::Embedding { path, .. } if !path.exists() => Status::NotFound,
            // Another family's, a pickle, or not an embedding file.
            PipelineError::Embedding { .. } => Status::Incompatible,
            _ => Status::Internal,
        };
        Error::new(status, e.to_string())
    }
}

thread_local! {
    /// The message of the last failed call on this thread ("" after a successful one).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// How many ditail calls this thread is inside (a progress callback may call again).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The message and place of a panic caught on this thread.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn set_last_error(message: &str) {
    // A message never holds NUL; if it did, C would see it cut there.
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The last error on this thread, valid until this thread's next ditail call.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Panics on a thread inside a ditail call are recorded (for the error message) instead of
/// printed; every other panic goes to the hook that was there before.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) > 0 {
                PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = PANIC.with(|p| p.borrow_mut().take()) {
        return s;
    }
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".into(),
    }
}

/// Runs an entry point: clears the last error, runs `f` with panics caught, and returns its
/// status (setting the last error when it failed).
pub(crate) fn guard(f: impl FnOnce() -> Result<()>) -> Status {
    set_last_error("");
    PANIC.with(|p| p.borrow_mut().take());
    install_panic_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    match result {
        Ok(Ok(())) => Status::Ok,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            set_last_error(&format!(
                "internal error (a bug in ditail; please report it): {}",
                panic_message(payload.as_ref())
            ));
            Status::Internal
        }
    }
}

/// For entry points that return a value instead of a status: `fallback` if `f` panics.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    install_panic_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    result.unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: the pointer is this thread's NUL-terminated message.
        unsafe { std::ffi::CStr::from_ptr(last_error_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_an_internal_error_with_its_message_and_place() {
        let status = guard(|| panic!("boom {}", 42));
        assert_eq!(status, Status::Internal);
        let message = last_error();
        assert!(message.contains("boom 42"), "{message}");
        assert!(message.contains("error.rs"), "{message}");
        // The next call clears it.
        assert_eq!(guard(|| Ok(())), Status::Ok);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn errors_keep_their_status_and_message() {
        let status = guard(|| Err(Error::new(Status::Settings, "omega is NaN")));
        assert_eq!(status, Status::Settings);
        assert_eq!(last_error(), "omega is NaN");
        let status = guard(|| Err(PipelineError::Cancelled.into()));
        assert_eq!(
            (status, last_error().as_str()),
            (Status::Cancelled, "cancelled")
        );
    }

    #[test]
    fn status_codes_round_trip() {
        for code in 0..12 {
            let status = Status::from_code(code).unwrap();
            assert_eq!(status as i32, code);
            assert_eq!(status.as_c_str().to_str().unwrap(), status.as_str());
        }
        assert_eq!(Status::from_code(12), None);
    }
}
