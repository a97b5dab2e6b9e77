// There is no Deserialize: a cached or received JSON blob cannot become a VerifiedImage.
use perry_verifier::VerifiedImage;

fn main() {
    let _forged: VerifiedImage = serde_json::from_str(r#"{"reference":"evil/image"}"#).unwrap();
}
