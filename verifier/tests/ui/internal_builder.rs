// The crate's own builder is crate-private.
use perry_policies::{Digest, ImageRef};
use perry_verifier::discover::SignatureLayout;

fn main() {
    let d = Digest::parse("sha256:0000000000000000000000000000000000000000000000000000000000000000").unwrap();
    let _forged = perry_verifier::image::new_verified(
        ImageRef::parse("evil/image").unwrap(),
        d.clone(),
        d.clone(),
        d,
        "trusted@example.com".into(),
        "https://accounts.google.com".into(),
        None,
        None,
        SignatureLayout::Referrers,
    );
}
