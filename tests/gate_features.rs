//! The runtime's `test-support` feature (a hand-made rootfs for its own tests, the bare floor
//! step) is never part of what ships: no crate of the product enables it in a normal build. If
//! one did, a path could reach the runner without verification.

#[test]
fn no_normal_build_of_the_product_enables_the_runtimes_test_support() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "perry-sandbox",
            "-e",
            "normal,features",
            "-i",
            "perry-runtime",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.contains("perry-runtime v"), "{tree}");
    assert!(
        !tree.contains("test-support"),
        "a normal build enables it:\n{tree}"
    );
}
