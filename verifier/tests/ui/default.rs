// There is no Default to start from.
use perry_verifier::VerifiedImage;

fn main() {
    let _forged: VerifiedImage = Default::default();
}
