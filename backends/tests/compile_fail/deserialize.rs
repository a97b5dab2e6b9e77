// PinnedImage cannot be deserialised from attacker-supplied JSON.
use perry_backends::PinnedImage;

fn main() {
    let _p: PinnedImage = serde_json::from_str("\"busybox@sha256:00\"").unwrap();
}
