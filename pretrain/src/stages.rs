//! Stages of one run: `[[stages]]` in a recipe continue the run after its main schedule with
//! other crops, optimisation, teacher, masking or loss settings, and another batch size — the
//! short high-resolution stage that ends DINOv2 pre-training (global crops at 518 px) is the
//! usual one. Each stage's schedules start again from its first iteration, as a new run from a
//! checkpoint would; one run and one `--resume` cover them all.
//!
//! ```toml
//! [[stages]]
//! name = "high-res"
//! iterations = 2000          # default: the stage's optim.epochs x optim.epoch_length
//! [stages.crops]
//! global_size = 518          # local crops scale with it unless set (98 -> 224 at patch 14)
//! [stages.optim]
//! base_lr = 1e-4
//! warmup_epochs = 0
//! [stages.data]
//! batch_size = 8
//! ```
//!
//! When a stage changes the global crop size, every backbone's position-embedding table is
//! resampled once to the new patch grid (with the model's own interpolation mode) and stored
//! so; the run measures the kNN accuracy of the model as it stands at the new size first
//! (the baseline of simply evaluating at high resolution) and again at the stage's end.

use serde::{Deserialize, Serialize};

use crate::recipe::Recipe;

/// One `[[stages]]` entry: its name, length, and the recipe sections it overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSection {
    pub name: String,
    /// Iterations of the stage (default: its `optim.epochs` x `optim.epoch_length`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    /// `crops`, `optim`, `teacher`, `masking`, `loss` tables and `data.batch_size`.
    #[serde(flatten)]
    pub overrides: toml::Table,
}

/// Sections a stage may override.
const SECTIONS: &[&str] = &["crops", "optim", "teacher", "masking", "loss", "data"];

impl StageSection {
    /// Why the stage cannot be used, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("[[stages]] needs a `name`".into());
        }
        for (key, value) in &self.overrides {
            if !SECTIONS.contains(&key.as_str()) {
                return Err(format!(
                    "stage `{}`: `{key}` cannot change between stages (a stage overrides {})",
                    self.name,
                    SECTIONS.join(", ")
                ));
            }
            if !value.is_table() {
                return Err(format!("stage `{}`: `{key}` must be a table", self.name));
            }
            if key == "data" {
                if let Some(other) = value
                    .as_table()
                    .and_then(|t| t.keys().find(|k| *k != "batch_size"))
                {
                    return Err(format!(
                        "stage `{}`: data.{other} cannot change between stages (only \
                         data.batch_size)",
                        self.name
                    ));
                }
            }
        }
        if self.iterations == Some(0) {
            return Err(format!(
                "stage `{}`: iterations must be at least 1",
                self.name
            ));
        }
        Ok(())
    }
}

/// A stage of the run: iterations `start..end` with `recipe`'s settings (the main schedule is
/// stage 0, named `main`).
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub start: usize,
    pub end: usize,
    pub recipe: Recipe,
}

impl Stage {
    /// The patch grid of this stage's global crops.
    pub fn grid(&self, patch: usize) -> usize {
        self.recipe.crops.global_size as usize / patch
    }
}

/// `a` with the tables of `b` merged in, key by key.
fn merge(a: &mut toml::Table, b: &toml::Table) {
    for (k, v) in b {
        match (a.get_mut(k), v) {
            (Some(toml::Value::Table(at)), toml::Value::Table(bt)) => merge(at, bt),
            _ => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The stages of `recipe`, main schedule first. A stage that changes `crops.global_size` but
/// not `crops.local_size` scales the local crops with it (to a multiple of `patch`).
pub fn plan(recipe: &Recipe, patch: usize) -> Result<Vec<Stage>, String> {
    let main_len = recipe.optim.epochs * recipe.optim.epoch_length;
    let mut base: toml::Table = recipe
        .to_toml()
        .parse()
        .map_err(|e| format!("the recipe as TOML: {e}"))?;
    base.remove("stages");
    let origin = recipe.train.output_dir.join("recipe.toml");
    let mut out = vec![Stage {
        name: "main".into(),
        start: 0,
        end: main_len,
        recipe: recipe.clone(),
    }];
    let mut table = base;
    for s in &recipe.stages {
        s.validate()?;
        let previous = out.last().expect("the main stage");
        let mut overrides = s.overrides.clone();
        let crops = overrides.get("crops").and_then(|c| c.as_table());
        let new_global = crops
            .and_then(|c| c.get("global_size"))
            .and_then(|v| v.as_integer());
        if let (Some(g), None) = (new_global, crops.and_then(|c| c.get("local_size"))) {
            let old = &previous.recipe.crops;
            let scaled = old.local_size as f64 * g as f64 / old.global_size as f64;
            let local = ((scaled / patch as f64).round() as i64).max(1) * patch as i64;
            let crops = overrides
                .entry("crops")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(t) = crops.as_table_mut() {
                t.insert("local_size".into(), toml::Value::Integer(local));
            }
        }
        merge(&mut table, &overrides);
        let text = toml::to_string(&table).map_err(|e| format!("stage `{}`: {e}", s.name))?;
        let stage_recipe =
            Recipe::parse(&text, &origin, &[]).map_err(|e| format!("stage `{}`: {e}", s.name))?;
        let len = s
            .iterations
            .unwrap_or(stage_recipe.optim.epochs * stage_recipe.optim.epoch_length);
        let start = previous.end;
        out.push(Stage {
            name: s.name.clone(),
            start,
            end: start + len,
            recipe: stage_recipe,
        });
    }
    Ok(out)
}

/// Iterations of the whole run: every stage, cut at `train.max_steps`.
pub fn total_steps(plan: &[Stage], max_steps: Option<usize>) -> usize {
    let all = plan.last().map_or(0, |s| s.end);
    max_steps.map_or(all, |m| m.min(all))
}

/// The index of the stage iteration `step` belongs to.
pub fn stage_of(plan: &[Stage], step: usize) -> usize {
    plan.iter().rposition(|s| s.start <= step).unwrap_or(0)
}

/// The position-embedding grid the backbones have after the stage switches made up to and
/// including iteration `step` (`initial` before any): a switch changes it when the stage's
/// global crops differ in size from the previous stage's.
pub fn pos_grid_after(plan: &[Stage], step: Option<usize>, patch: usize, initial: usize) -> usize {
    let mut grid = initial;
    let Some(step) = step else { return grid };
    for pair in plan.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        if next.start <= step && next.recipe.crops.global_size != prev.recipe.crops.global_size {
            grid = next.grid(patch);
        }
    }
    grid
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn recipe(stages: &str) -> Result<Recipe, String> {
        let text = format!(
            r#"
[model]
arch = "vits14"
[data]
images = ["x"]
batch_size = 4
[crops]
global_size = 224
local_size = 98
[optim]
epochs = 2
epoch_length = 5
{stages}
"#
        );
        Recipe::parse(&text, Path::new("/tmp/r.toml"), &[]).map_err(|e| e.to_string())
    }

    #[test]
    fn a_high_resolution_stage_follows_the_main_schedule() {
        let r = recipe(
            r#"
[[stages]]
name = "high-res"
iterations = 3
[stages.crops]
global_size = 518
[stages.optim]
base_lr = 1e-4
[stages.data]
batch_size = 2
"#,
        )
        .unwrap();
        let plan = plan(&r, 14).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!((plan[0].start, plan[0].end), (0, 10));
        assert_eq!((plan[1].start, plan[1].end), (10, 13));
        let hr = &plan[1].recipe;
        assert_eq!(hr.crops.global_size, 518);
        // 98 * 518 / 224 = 226.6 -> 16 patches of 14.
        assert_eq!(hr.crops.local_size, 224);
        assert_eq!(hr.optim.base_lr, 1e-4);
        assert_eq!(hr.data.batch_size, 2);
        // Unchanged sections stay as the main recipe has them.
        assert_eq!(hr.optim.epoch_length, 5);
        assert_eq!(total_steps(&plan, None), 13);
        assert_eq!(total_steps(&plan, Some(11)), 11);
        assert_eq!(stage_of(&plan, 9), 0);
        assert_eq!(stage_of(&plan, 10), 1);
        assert_eq!(pos_grid_after(&plan, Some(9), 14, 16), 16);
        assert_eq!(pos_grid_after(&plan, Some(10), 14, 16), 37);
        assert_eq!(pos_grid_after(&plan, None, 14, 16), 16);
    }

    #[test]
    fn stages_change_only_what_may_change() {
        for (bad, says) in [
            (
                "[[stages]]\nname = \"x\"\n[stages.model]\ndepth = 2",
                "`model` cannot change",
            ),
            (
                "[[stages]]\nname = \"x\"\n[stages.data]\nimages = []",
                "data.images cannot change",
            ),
            ("[[stages]]\nname = \"\"", "needs a `name`"),
            ("[[stages]]\nname = \"x\"\niterations = 0", "at least 1"),
        ] {
            let err = recipe(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
