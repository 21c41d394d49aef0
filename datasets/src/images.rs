//! Image inputs: files, folders (recursively) and list files, decoded to RGB.

use std::path::{Path, PathBuf};

use image::DynamicImage;

/// Extensions read as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp"];

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot decode the image: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("{path}: not a list of images: {reason}")]
    List { path: PathBuf, reason: String },
    #[error("{}: {}", .0.display(), dinoadapt_core::io::why_unreachable(.0))]
    Missing(PathBuf),
    #[error("no images found in {0:?} (looked for {IMAGE_EXTENSIONS:?})")]
    Empty(Vec<PathBuf>),
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImageError> {
    let io = |source| ImageError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Expand inputs into image paths, in a stable order: an image file is itself, a folder is every
/// image below it (sorted), any other file is a list with one path per line (relative paths are
/// relative to the list; blank lines and `#` comments are skipped; a CSV's first column is used,
/// quoted or not, and a header starting with `path` is skipped).
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, ImageError> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut out)?;
        } else if input.is_file() && is_image(input) {
            out.push(input.clone());
        } else if input.is_file() {
            let text = std::fs::read_to_string(input).map_err(|source| ImageError::Io {
                path: input.clone(),
                source,
            })?;
            let base = input.parent().unwrap_or(Path::new("."));
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let first = first_csv_cell(line).map_err(|e| ImageError::List {
                    path: input.clone(),
                    reason: e.to_string(),
                })?;
                if first == "path" {
                    continue; // CSV header
                }
                let p = base.join(first);
                if !p.is_file() {
                    return Err(ImageError::Missing(p));
                }
                out.push(p);
            }
        } else {
            return Err(ImageError::Missing(input.clone()));
        }
    }
    if out.is_empty() {
        return Err(ImageError::Empty(inputs.to_vec()));
    }
    Ok(out)
}

/// The first cell of one CSV line (`"a, b.png",1` gives `a, b.png`), trimmed.
fn first_csv_cell(line: &str) -> Result<String, csv::Error> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(line.as_bytes());
    let mut record = csv::StringRecord::new();
    reader.read_record(&mut record)?;
    Ok(record.get(0).unwrap_or_default().to_string())
}

/// Decode an image file (PNG, JPEG, TIFF, ...).
pub fn open_image(path: &Path) -> Result<DynamicImage, ImageError> {
    if std::fs::metadata(path).is_err() {
        return Err(ImageError::Missing(path.to_path_buf()));
    }
    dinoadapt_core::io::refuse_special_file(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = image::ImageReader::open(path)
        .map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let img = reader.decode().map_err(|e| ImageError::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if jpeg && !ends_with_jpeg_eoi(path) {
        return Err(ImageError::Decode {
            path: path.to_path_buf(),
            reason: "truncated JPEG: the file ends before its end-of-image marker (the decoder \
                     would fill the missing part with gray)"
                .into(),
        });
    }
    Ok(img)
}

/// Whether a JPEG file ends with its end-of-image marker `FF D9` (trailing zero or
/// whitespace padding allowed): a cut-off JPEG decodes without error, its missing rows gray.
fn ends_with_jpeg_eoi(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut tail = Vec::new();
    if f.seek(SeekFrom::Start(len.saturating_sub(4096))).is_err()
        || f.read_to_end(&mut tail).is_err()
    {
        return false;
    }
    while tail
        .last()
        .is_some_and(|b| *b == 0 || b.is_ascii_whitespace())
    {
        tail.pop();
    }
    tail.ends_with(&[0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_files_folders_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let img = image::RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30]));
        img.save(dir.path().join("b.png")).unwrap();
        img.save(sub.join("a.jpg")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let found = collect_images(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(found, [dir.path().join("b.png"), sub.join("a.jpg")]);
        let list = dir.path().join("list.csv");
        img.save(dir.path().join("tumour, grade 2.png")).unwrap();
        std::fs::write(
            &list,
            "path,label\nsub/a.jpg,1\n# c\n\n\"tumour, grade 2.png\",\"a, b\"\n b.png ,0\n",
        )
        .unwrap();
        let from_list = collect_images(&[list]).unwrap();
        let quoted = dir.path().join("tumour, grade 2.png");
        assert_eq!(
            from_list,
            [sub.join("a.jpg"), quoted, dir.path().join("b.png")]
        );
        assert!(matches!(
            collect_images(&[dir.path().join("nope")]),
            Err(ImageError::Missing(_))
        ));
        let decoded = open_image(&sub.join("a.jpg")).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (4, 3));
        std::fs::write(dir.path().join("bad.png"), b"not a png").unwrap();
        assert!(matches!(
            open_image(&dir.path().join("bad.png")),
            Err(ImageError::Decode { .. })
        ));
    }
}
