//! `perry-sandbox`: verified, digest-pinned, hardened execution of OCI images.
//!
//! This binary is the edge of the product: it parses arguments, loads `perryconfig.toml`, calls
//! the library crates and turns their errors into stable codes and exit statuses (see
//! `cli::error`). The work itself lives in the member crates.
#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
