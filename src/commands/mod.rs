//! One module per subcommand: its clap arguments (whose `///` docs are the
//! `--help` text) and its `run`.

pub mod cache_args;
pub mod check;
pub mod configure;
pub mod doctor;
pub mod enqueue;
pub mod keys;
pub mod provision;
pub mod push;
pub mod queue;
pub mod resign;
pub mod upload_queue;
