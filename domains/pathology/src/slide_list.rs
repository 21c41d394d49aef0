//! The slides of a batch: files, folders (searched recursively, sorted) and CSV lists
//! (`path`, optional `slide_id` and `mpp` columns), each with the id its outputs are named by.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Why a slide list cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SlideListError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}")]
    List(String),
}

/// File endings taken from folders: what OpenSlide reads, and plain images.
const SLIDE_ENDINGS: &[&str] = &[
    "svs", "tif", "tiff", "ndpi", "vms", "vmu", "scn", "mrxs", "svslide", "bif", "dcm", "png",
    "jpg", "jpeg",
];

/// One slide of the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SlideEntry {
    pub path: PathBuf,
    /// The id outputs are named by (the CSV's `slide_id`, else the file stem).
    pub slide_id: String,
    /// Per-slide mpp override (CSV column `mpp`).
    pub mpp: Option<f64>,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SlideListError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| SlideListError::Read(dir.to_path_buf(), e))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        // Hidden entries are not slides: macOS AppleDouble companions (`._slide.svs`), `.DS_Store`,
        // `.Trash` folders.
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if p.is_dir() {
            // MRXS slides keep their data in a folder beside the .mrxs file.
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| SLIDE_ENDINGS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "slide".into())
}

/// A CSV list: a header with `path` (or `slide_path`), optionally `slide_id` and `mpp`;
/// relative paths are taken from the CSV's folder. Cells may be quoted (`"a, b.svs"`); blank
/// lines are skipped and rows may be short.
fn read_csv(path: &Path) -> Result<Vec<SlideEntry>, SlideListError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| SlideListError::Read(path.to_path_buf(), e))?;
    let bad = |message: String| SlideListError::List(format!("{}: {message}", path.display()));
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| bad(e.to_string()))?
        .iter()
        .map(str::to_ascii_lowercase)
        .collect();
    if header.iter().all(String::is_empty) {
        return Err(bad("empty list".into()));
    }
    let find = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
    let p = find(&["path", "slide_path", "slide"])
        .ok_or_else(|| bad(format!("no `path` column in the header {header:?}")))?;
    let (id, mpp) = (find(&["slide_id", "id"]), find(&["mpp"]));
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for record in reader.records() {
        let cells = record.map_err(|e| bad(e.to_string()))?;
        let line = cells.position().map_or(0, |p| p.line());
        let file = cells
            .get(p)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad(format!("line {line} has no path")))?;
        let file = base.join(file);
        let mpp = match mpp.and_then(|i| cells.get(i)).filter(|c| !c.is_empty()) {
            Some(v) => Some(
                v.parse::<f64>()
                    .map_err(|_| bad(format!("line {line}: mpp `{v}` is not a number")))?,
            ),
            None => None,
        };
        out.push(SlideEntry {
            slide_id: id
                .and_then(|i| cells.get(i))
                .filter(|c| !c.is_empty())
                .map(|c| c.to_string())
                .unwrap_or_else(|| stem(&file)),
            path: file,
            mpp,
        });
    }
    Ok(out)
}

/// Slides whose ids come from their file names and collide (`a/slide.svs`, `b/slide.svs`) are
/// named with their folder too (`a_slide`, `b_slide`), then numbered if that is not enough;
/// ids a CSV list gave are left as they are.
fn disambiguate_stems(entries: &mut [SlideEntry], given: &BTreeSet<usize>) {
    let count =
        |entries: &[SlideEntry], id: &str| entries.iter().filter(|e| e.slide_id == id).count();
    let shared: Vec<usize> = (0..entries.len())
        .filter(|i| !given.contains(i) && count(entries, &entries[*i].slide_id) > 1)
        .collect();
    for &i in &shared {
        let e = &mut entries[i];
        if let Some(folder) = e.path.parent().and_then(|p| p.file_name()) {
            e.slide_id = format!("{}_{}", folder.to_string_lossy(), e.slide_id);
        }
    }
    for &i in &shared {
        let id = entries[i].slide_id.clone();
        let same: Vec<usize> = shared
            .iter()
            .copied()
            .filter(|&j| entries[j].slide_id == id)
            .collect();
        if same.len() > 1 {
            for (k, j) in same.into_iter().enumerate() {
                entries[j].slide_id = format!("{id}_{}", k + 1);
            }
        }
    }
}

/// Slides from files, folders (recursive, sorted) and CSV lists; ids must be unique.
pub fn collect_slides(inputs: &[PathBuf]) -> Result<Vec<SlideEntry>, SlideListError> {
    let mut out = Vec::new();
    // Ids a CSV list gave (the user's: never changed); the others come from file names.
    let mut given = BTreeSet::new();
    for input in inputs {
        if input.is_dir() {
            let mut files = Vec::new();
            walk(input, &mut files)?;
            // A DICOM slide is one file per level and associated image: keep its first file.
            let mut series = BTreeSet::new();
            files.retain(|p| match crate::dicom_wsi::series_uid(p) {
                Some(uid) => series.insert(uid),
                None => true,
            });
            out.extend(files.into_iter().map(|p| SlideEntry {
                slide_id: stem(&p),
                path: p,
                mpp: None,
            }));
        } else if input
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            for entry in read_csv(input)? {
                if entry.slide_id != stem(&entry.path) {
                    given.insert(out.len());
                }
                out.push(entry);
            }
        } else {
            out.push(SlideEntry {
                slide_id: stem(input),
                path: input.clone(),
                mpp: None,
            });
        }
    }
    disambiguate_stems(&mut out, &given);
    let mut seen = BTreeSet::new();
    for s in &out {
        if s.slide_id.contains(['/', '\\']) || s.slide_id.is_empty() || s.slide_id.starts_with('.')
        {
            return Err(SlideListError::List(format!(
                "slide id `{}` cannot name a file; give ids in a CSV list",
                s.slide_id
            )));
        }
        if !seen.insert(s.slide_id.clone()) {
            return Err(SlideListError::List(format!(
                "two slides have the id `{}`; give unique ids in a CSV list (column slide_id)",
                s.slide_id
            )));
        }
    }
    if out.is_empty() {
        return Err(SlideListError::List(format!(
            "no slides found in {inputs:?}"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18, defect 7: one AppleDouble companion, or two slides sharing a file stem in two
    /// folders, refused the whole batch.
    #[test]
    fn hidden_files_are_skipped_and_shared_stems_get_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["a", "b", ".Trash"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        for f in [
            "a/slide.svs",
            "a/._slide.svs",
            "b/slide.svs",
            "b/other.svs",
            ".Trash/x.svs",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let slides = collect_slides(&[dir.path().to_path_buf()]).unwrap();
        let ids: Vec<&str> = slides.iter().map(|s| s.slide_id.as_str()).collect();
        assert_eq!(ids, ["a_slide", "other", "b_slide"]);
        // A stem shared with an explicit file argument in the same folder name is numbered.
        let again = collect_slides(&[
            dir.path().join("a/slide.svs"),
            dir.path().join("a/slide.svs"),
        ])
        .unwrap();
        let ids: Vec<&str> = again.iter().map(|s| s.slide_id.as_str()).collect();
        assert_eq!(ids, ["a_slide_1", "a_slide_2"]);
    }

    #[test]
    fn csv_lists_give_ids_and_mpp_and_ids_must_be_unique() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("list.csv");
        std::fs::write(&csv, "slide_id,path,mpp\nA,a.svs,0.25\nB,sub/b.tiff,\n").unwrap();
        let s = collect_slides(std::slice::from_ref(&csv)).unwrap();
        assert_eq!(s[0].slide_id, "A");
        assert_eq!(s[0].mpp, Some(0.25));
        assert_eq!(s[1].path, dir.path().join("sub/b.tiff"));
        std::fs::write(
            &csv,
            "\"slide_id\",path\n\"tumour, grade 2\",\"scans/a, left.svs\"\n\nB, b.svs \n",
        )
        .unwrap();
        let s = collect_slides(std::slice::from_ref(&csv)).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].slide_id, "tumour, grade 2");
        assert_eq!(s[0].path, dir.path().join("scans/a, left.svs"));
        assert_eq!((s[1].slide_id.as_str(), s[1].mpp), ("B", None));
        assert_eq!(s[1].path, dir.path().join("b.svs"));
        std::fs::write(&csv, "slide_id,path\nA,a.svs\nA,b.svs\n").unwrap();
        assert!(collect_slides(&[csv])
            .unwrap_err()
            .to_string()
            .contains("two slides"));
    }
}
