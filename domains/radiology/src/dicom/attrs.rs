//! Small typed accessors over dicom-object data sets (the file's top level or a sequence item).

use dicom_core::Tag;
use dicom_object::InMemDicomObject;

/// A data set: the top level of a file or an item of a sequence.
pub type DataSet = InMemDicomObject;

/// Trimmed text value; `None` when absent, empty or not text.
pub fn text(ds: &DataSet, tag: Tag) -> Option<String> {
    let e = ds.element_opt(tag).ok()??;
    let s = e.to_str().ok()?;
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

/// All numeric values (DS, FD, IS, US, ...) as f64; `None` when absent, empty or unparsable.
pub fn floats(ds: &DataSet, tag: Tag) -> Option<Vec<f64>> {
    let e = ds.element_opt(tag).ok()??;
    let v = e.to_multi_float64().ok()?;
    (!v.is_empty() && v.iter().all(|x| x.is_finite())).then_some(v)
}

/// The first numeric value.
pub fn float(ds: &DataSet, tag: Tag) -> Option<f64> {
    floats(ds, tag).map(|v| v[0])
}

/// Exactly `N` numeric values.
pub fn array<const N: usize>(ds: &DataSet, tag: Tag) -> Option<[f64; N]> {
    let v = floats(ds, tag)?;
    (v.len() >= N).then(|| {
        let mut a = [0.0; N];
        a.copy_from_slice(&v[..N]);
        a
    })
}

/// An unsigned integer value (US, IS, UL, ...).
pub fn uint(ds: &DataSet, tag: Tag) -> Option<u32> {
    let e = ds.element_opt(tag).ok()??;
    e.to_int::<u32>().ok()
}

/// The items of a sequence (empty when absent).
pub fn items(ds: &DataSet, tag: Tag) -> &[DataSet] {
    ds.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or(&[])
}

/// The first item of a sequence.
pub fn first_item(ds: &DataSet, tag: Tag) -> Option<&DataSet> {
    items(ds, tag).first()
}

/// `seq[0].tag` for a functional-group macro such as PixelMeasuresSequence inside an item.
pub fn in_macro<T>(group: &DataSet, seq: Tag, f: impl Fn(&DataSet) -> Option<T>) -> Option<T> {
    first_item(group, seq).and_then(f)
}
