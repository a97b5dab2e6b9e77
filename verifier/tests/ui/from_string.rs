// A raw image name cannot be converted into one, so it cannot reach a backend.
use perry_verifier::VerifiedImage;

fn run(_image: &VerifiedImage) {}

fn main() {
    let raw = String::from("docker.io/library/busybox:latest");
    run(&VerifiedImage::from(raw));
}
