//! Invariant 1, "the gate is a type": code outside perry-verifier cannot make a
//! `VerifiedImage` — not with a struct literal, not with `Default`, not by deserialising
//! attacker-supplied JSON, not from a string, not through the crate's internal builder.
//! Each file in `tests/ui/` must fail to compile, with the error recorded beside it.

#[test]
fn verified_image_cannot_be_forged_outside_the_verifier() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
