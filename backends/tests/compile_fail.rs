//! Invariant 1, "the gate is a type": a raw string or tag cannot reach `create`/`run`. Each
//! file in `tests/compile_fail/` must fail to compile, with the error recorded beside it.

#[test]
fn a_string_or_tag_cannot_reach_create_or_run() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
