//! The one error type of the helper.
//!
//! Every variant names the thing it is about (a file, a manifest field, an
//! endpoint, a store path) and, where it helps, what to do. Secrets never go
//! into a variant: callers pass paths and names, not values.

use std::path::{Path, PathBuf};

/// Result with the helper's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, written, created or inspected.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file was readable but its content is wrong.
    #[error("{path}: {message}")]
    InvalidFile { path: PathBuf, message: String },

    /// A manifest, flag or option has a bad value.
    #[error("{field}: {message}")]
    InvalidConfig { field: String, message: String },

    /// The manifest could not be parsed (message carries line and column).
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },

    /// A request to the store failed at the transport level.
    #[error("{endpoint}: {message}")]
    Transport { endpoint: String, message: String },

    /// The store answered with an error.
    #[error("{operation} {endpoint}: HTTP {status}{code}: {message}", code = code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Store {
        operation: String,
        endpoint: String,
        status: u16,
        code: Option<String>,
        message: String,
    },

    /// A Nix command failed or gave output we could not read.
    #[error("{command}: {message}")]
    Nix { command: String, message: String },

    /// A cryptographic check failed (decryption, signature, hash).
    #[error("{context}: {message}")]
    Crypto { context: String, message: String },

    /// Anything else that is the user's to fix; the message says how.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An I/O error about `path`, with the action that failed ("read", ...).
    pub fn io(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A content error about the file at `path`.
    pub fn invalid_file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::InvalidFile {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// A bad value of the option or manifest field `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A store error answer: `code` empty means none; a non-empty `hint`
    /// (what to do) is appended to the store's own message.
    pub fn store(
        operation: impl Into<String>,
        endpoint: impl Into<String>,
        status: u16,
        code: String,
        message: String,
        hint: &str,
    ) -> Self {
        let mut message = message;
        if !hint.is_empty() {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(hint);
        }
        Error::Store {
            operation: operation.into(),
            endpoint: endpoint.into(),
            status,
            code: (!code.is_empty()).then_some(code),
            message,
        }
    }

    /// The store's error code (`NoSuchEntity`, `AccessDenied`, ...) of a
    /// [`Error::Store`], for callers that act on particular answers.
    pub fn store_code(&self) -> Option<&str> {
        match self {
            Error::Store { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The process exit code for this error (see `--help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidConfig { .. } | Error::Manifest { .. } | Error::InvalidFile { .. } => 2,
            Error::Transport { .. } | Error::Store { .. } => 3,
            _ => 1,
        }
    }
}

/// Adds the path and action to an `io::Result`.
pub trait IoContext<T> {
    /// Maps an I/O error to [`Error::Io`] naming `path`.
    fn io_context(self, action: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, action: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
