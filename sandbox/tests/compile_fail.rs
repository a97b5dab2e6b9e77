//! Invariant 1, "the gate is a type", on the runtime side: code outside perry-runtime cannot
//! make a `VerifiedRootfs` (struct literal, `Default`), and a path or a string cannot reach
//! `RunSpec::new` (hence `native::run`). Each file in `tests/compile_fail/` must fail to
//! compile, with the error recorded beside it.

#[test]
fn a_path_cannot_reach_the_runner() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
