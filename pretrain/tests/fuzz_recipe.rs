//! Fuzzing of the recipe parser (issue 18): the repository's recipes, mutated, through
//! `Recipe::parse` and what the run asks of a parsed recipe (schedule, step count, TOML).

#[path = "../../core/tests/common/fuzz.rs"]
mod fuzz;

use dinoadapt_pretrain::Recipe;
use fuzz::{refused_with_message, Sample};

#[global_allocator]
static ALLOC: fuzz::BoundedAlloc = fuzz::BoundedAlloc;

#[test]
fn fuzz_recipe_parse() {
    // The recipes are in the repository: no shared data needed.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let samples: Vec<Sample> = files
        .iter()
        .map(|p| {
            let s = Sample::read(p);
            // The numbers' first digits: sizes, rates, counts set to extremes.
            let fields = s
                .bytes
                .iter()
                .enumerate()
                .filter(|(i, b)| b.is_ascii_digit() && (*i == 0 || s.bytes[i - 1] == b' '))
                .map(|(i, _)| i)
                .collect();
            s.with_fields(fields)
        })
        .collect();
    let origin = dir.join("fuzzed.toml");
    fuzz::fuzz("fuzz_recipe_parse", &samples, |_, bytes| {
        let text = String::from_utf8_lossy(bytes);
        match Recipe::parse(&text, &origin, &[]) {
            Ok(recipe) => {
                recipe.schedule_config();
                recipe.total_steps();
                recipe.to_toml();
                Ok(())
            }
            Err(e) => refused_with_message(Err::<(), _>(e)),
        }
    });
}
