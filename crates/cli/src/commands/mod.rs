//! One module per `mm` command; `text` holds the four text commands (embed, similarity,
//! search, generate).

pub mod bench;
pub mod check;
pub mod infer;
pub mod init;
pub mod models;
pub mod plugins;
pub mod ps;
pub mod pull;
pub mod quantize_check;
pub mod scoring;
pub mod serve;
pub mod status;
pub mod text;
