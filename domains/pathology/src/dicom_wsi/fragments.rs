//! Where each frame of an encapsulated DICOM Pixel Data element lies in its file, found once
//! when the level opens so that a tile read seeks to its frame and reads only those bytes (a
//! whole-slide level can be gigabytes; dicom-rs would load all of it).
//!
//! Encapsulated Pixel Data (PS3.5 A.4) is the element (7FE0,0010) with an undefined length,
//! followed by items (FFFE,E000): the Basic Offset Table, then the fragments, then a Sequence
//! Delimitation Item (FFFE,E0DD). Whole-slide images put one frame in one fragment.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// (7FE0,0010) in little-endian explicit VR with an undefined length: tag, VR (OB or OW),
/// two reserved bytes, 0xFFFFFFFF.
const PIXEL_DATA_OB: [u8; 12] = [
    0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
];
const PIXEL_DATA_OW: [u8; 12] = [
    0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
];
const ITEM: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];
const SEQUENCE_END: [u8; 4] = [0xFE, 0xFF, 0xDD, 0xE0];

/// Byte range of one fragment's value in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub offset: u64,
    pub len: u32,
}

/// Offsets in `path` where an encapsulated Pixel Data element header starts.
fn candidates(path: &Path) -> std::io::Result<Vec<u64>> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut found = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    // Bytes kept from the previous chunk so that a header split across chunks is still seen.
    let mut carry: Vec<u8> = Vec::new();
    let mut base = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut window = std::mem::take(&mut carry);
        let start = base - window.len() as u64;
        window.extend_from_slice(&buf[..n]);
        for (i, w) in window.windows(12).enumerate() {
            if w == PIXEL_DATA_OB || w == PIXEL_DATA_OW {
                found.push(start + i as u64);
            }
        }
        base += n as u64;
        let keep = window.len().min(11);
        carry = window[window.len() - keep..].to_vec();
    }
    Ok(found)
}

/// The items after the element header at `header`, or None if they do not parse as an
/// encapsulated pixel sequence that ends inside the file.
fn items_at(f: &mut File, header: u64, file_len: u64) -> Option<Vec<Fragment>> {
    let mut pos = header + 12;
    let mut items = Vec::new();
    loop {
        f.seek(SeekFrom::Start(pos)).ok()?;
        let mut h = [0u8; 8];
        f.read_exact(&mut h).ok()?;
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if h[..4] == SEQUENCE_END {
            return Some(items);
        }
        if h[..4] != ITEM || len == u32::MAX || pos + 8 + u64::from(len) > file_len {
            return None;
        }
        items.push(Fragment {
            offset: pos + 8,
            len,
        });
        pos += 8 + u64::from(len);
    }
}

/// The fragments of the file's top-level encapsulated Pixel Data (Basic Offset Table dropped):
/// the last candidate header whose items parse (a nested icon image comes earlier, since
/// (7FE0,0010) is the last top-level element). None if there is no such element.
pub fn locate(path: &Path) -> std::io::Result<Option<Vec<Fragment>>> {
    let mut f = File::open(path)?;
    let file_len = f.metadata()?.len();
    for header in candidates(path)?.into_iter().rev() {
        if let Some(items) = items_at(&mut f, header, file_len) {
            if items.is_empty() {
                continue;
            }
            return Ok(Some(items[1..].to_vec()));
        }
    }
    Ok(None)
}

/// Reads one fragment's bytes from the open file (a positional read: threads may share it).
pub fn read(file: &File, fragment: Fragment) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0u8; fragment.len as usize];
    file.read_exact_at(&mut bytes, fragment.offset)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(bytes: &[u8]) -> Vec<u8> {
        let mut v = ITEM.to_vec();
        v.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn finds_the_last_pixel_sequence_and_skips_the_offset_table() {
        let mut file = vec![0u8; 200];
        // A nested (icon) pixel sequence first, then the top-level one.
        file.extend_from_slice(&PIXEL_DATA_OB);
        file.extend(item(&[]));
        file.extend(item(&[9, 9]));
        file.extend_from_slice(&SEQUENCE_END);
        file.extend_from_slice(&[0, 0, 0, 0]);
        file.extend_from_slice(&PIXEL_DATA_OB);
        let top = file.len() as u64;
        file.extend(item(&[0, 0, 0, 0]));
        file.extend(item(&[1, 2, 3]));
        file.extend(item(&[4, 5]));
        file.extend_from_slice(&SEQUENCE_END);
        file.extend_from_slice(&[0, 0, 0, 0]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.dcm");
        std::fs::write(&path, &file).unwrap();
        let frags = locate(&path).unwrap().unwrap();
        assert_eq!(frags.len(), 2);
        assert_eq!(frags[0].offset, top + 8 + 4 + 8);
        let f = File::open(&path).unwrap();
        assert_eq!(read(&f, frags[0]).unwrap(), vec![1, 2, 3]);
        assert_eq!(read(&f, frags[1]).unwrap(), vec![4, 5]);
    }

    #[test]
    fn a_truncated_sequence_is_not_taken() {
        let mut file = vec![0u8; 10];
        file.extend_from_slice(&PIXEL_DATA_OW);
        file.extend(item(&[]));
        file.extend_from_slice(&ITEM);
        file.extend_from_slice(&1000u32.to_le_bytes());
        file.extend_from_slice(&[1, 2, 3]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.dcm");
        std::fs::write(&path, &file).unwrap();
        assert_eq!(locate(&path).unwrap(), None);
    }
}
