// A struct literal needs the private fields.
use perry_policies::{Digest, ImageRef};
use perry_verifier::discover::SignatureLayout;
use perry_verifier::VerifiedImage;

fn main() {
    let d = Digest::parse("sha256:0000000000000000000000000000000000000000000000000000000000000000").unwrap();
    let _forged = VerifiedImage {
        reference: ImageRef::parse("evil/image").unwrap(),
        digest: d.clone(),
        platform_digest: d.clone(),
        signed_digest: d,
        signer_identity: "trusted@example.com".into(),
        issuer: "https://accounts.google.com".into(),
        integrated_time: None,
        log_index: None,
        layout: SignatureLayout::Referrers,
        origin: perry_verifier::Origin::OciLayout("/tmp/evil".into()),
    };
}
