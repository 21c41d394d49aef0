//! Fuzzing of image lists (issue 18): one-path-a-line and CSV lists of the shared MNIST images,
//! mutated, through `collect_images`.

#[path = "../../core/tests/common/fuzz.rs"]
mod fuzz;

use dinoadapt_datasets::collect_images;
use fuzz::{refused_with_message, Sample, Scratch};

#[global_allocator]
static ALLOC: fuzz::BoundedAlloc = fuzz::BoundedAlloc;

#[test]
fn fuzz_image_list() {
    let Some(data) = fuzz::shared("data") else {
        return;
    };
    let digits = data.join("mnist5k/train/3");
    let mut images: Vec<_> = std::fs::read_dir(&digits)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    images.sort();
    let images: Vec<String> = images
        .iter()
        .take(4)
        .map(|p| p.display().to_string())
        .collect();
    let lists = [
        format!("# digits\n{}\n\n{}\n", images[0], images[1]),
        format!("path,label\n\"{}\",3\n{},3\n", images[2], images[3]),
    ];
    let samples: Vec<Sample> = lists
        .iter()
        .enumerate()
        .map(|(i, t)| Sample::text(&format!("list{i}"), t))
        .collect();
    let scratch = Scratch::new("image-list");
    fuzz::fuzz("fuzz_image_list", &samples, |_, bytes| {
        let path = scratch.write("images.txt", bytes);
        refused_with_message(collect_images(&[path]))
    });
}
