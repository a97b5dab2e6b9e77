// PinnedImage's fields are private: no struct literal.
use perry_backends::PinnedImage;

fn main() {
    let _p = PinnedImage { pinned: "busybox@sha256:00".into() };
}
