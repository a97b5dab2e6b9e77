// A tag string in place of the image: ContainerSpec::new takes a PinnedImage only.
use perry_backends::{ContainerSpec, Hardening};

fn spec(h: Hardening) -> ContainerSpec {
    ContainerSpec::new("c", "docker.io/library/busybox:latest", h)
}

fn main() {}
