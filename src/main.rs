//! `perry-sandbox`: verified, digest-pinned, hardened execution of OCI images.
//!
//! This binary is the edge of the product: it parses arguments, loads `perryconfig.toml`, calls
//! the library crates and turns their errors into stable codes and exit statuses (see
//! `cli::error`). The work itself lives in the member crates.
#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    // The serve spawner (see `perry_runtime::native::Spawner`): decided before anything else
    // runs, so that its process never parses a configuration or loads a key.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(perry_runtime::native::SPAWNER_ARG))
    {
        perry_runtime::native::spawner_main();
    }
    cli::main()
}
