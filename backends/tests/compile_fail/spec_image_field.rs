// Swapping the image of a spec for a string does not type-check either.
use perry_backends::ContainerSpec;

fn retarget(mut s: ContainerSpec) -> ContainerSpec {
    s.image = String::from("evil.example/app:latest");
    s
}

fn main() {}
