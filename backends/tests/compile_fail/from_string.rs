// A raw image name cannot be converted into a PinnedImage.
use perry_backends::PinnedImage;

fn main() {
    let _p = PinnedImage::from(String::from("busybox:latest"));
}
