// PinnedImage has no Default.
use perry_backends::PinnedImage;

fn main() {
    let _p = PinnedImage::default();
}
