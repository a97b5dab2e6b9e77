//! `perry-demo-world DIR`: the loopback world `scripts/demo` shows perry-sandbox in.
//!
//! Starts a real registry (Debian `docker-registry`) on a free 127.0.0.1 port and the
//! sigstore-js signing stack, builds two tiny busybox images, signs one keyless (a Fulcio
//! certificate for the stack's test identity, logged in its Rekor), pushes both, writes
//! `DIR/perryconfig.toml` trusting that identity for the registry's images, then prints
//! `READY <registry host>` and keeps the registry up until its stdin closes.
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::path::PathBuf;

use perry_testworld::{ConfigBuilder, Registry, SigStack, SignOptions, TinyImage};

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: perry-demo-world DIR");
        std::process::exit(2);
    };
    let reg = Registry::start();
    let stack = SigStack::start();
    let signed = reg.push_image(
        "demo/hello",
        "v1",
        &TinyImage::busybox_marked("amd64", "signed in CI"),
    );
    let sig = stack.sign(&reg, "demo/hello", &signed.digest, &SignOptions::default());
    reg.push_image(
        "demo/unsigned",
        "v1",
        &TinyImage::busybox_marked("amd64", "nobody signed this"),
    );
    let config = ConfigBuilder::new(&reg, &stack).write(&dir);
    eprintln!(
        "demo world: registry {}, signed demo/hello@{} as {} ({:?} layout), pushed demo/unsigned unsigned, config {}",
        reg.host(),
        signed.digest,
        perry_testworld::DEFAULT_IDENTITY,
        sig.layout,
        config.display()
    );
    println!("READY {}", reg.host());
    let _ = std::io::stdout().flush();
    // Serve until the caller closes our stdin (or dies).
    for _ in std::io::stdin().lock().lines() {}
}
