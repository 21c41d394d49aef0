//! Where each frame of an encapsulated DICOM Pixel Data element lies in its file, found once
//! when the level opens so that a tile read seeks to its frame and reads only those bytes (a
//! whole-slide level can be gigabytes; dicom-rs would load all of it).
//!
//! Encapsulated Pixel Data (PS3.5 A.4) is the element (7FE0,0010) with an undefined length,
//! followed by items (FFFE,E000): the Basic Offset Table, then the fragments, then a Sequence
//! Delimitation Item (FFFE,E0DD). Whole-slide images put one frame in one fragment.
//!
//! The element is found by walking the top-level element headers (explicit VR little endian,
//! values and sequences skipped, nothing read but headers); files that do not walk (another
//! transfer syntax, damage) are scanned byte by byte for the element header instead.

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
const PIXEL_DATA: [u8; 4] = [0xE0, 0x7F, 0x10, 0x00];
const ITEM: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];
const ITEM_END: [u8; 4] = [0xFE, 0xFF, 0x0D, 0xE0];
const SEQUENCE_END: [u8; 4] = [0xFE, 0xFF, 0xDD, 0xE0];
/// VRs whose explicit-VR header has two reserved bytes and a 4-byte length (PS3.5 7.1.2).
const LONG_VRS: [[u8; 2]; 13] = [
    *b"OB", *b"OD", *b"OF", *b"OL", *b"OV", *b"OW", *b"SQ", *b"SV", *b"UC", *b"UN", *b"UR", *b"UT",
    *b"UV",
];

/// Byte range of one fragment's value in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub offset: u64,
    pub len: u32,
}

/// Reads element headers of an explicit VR little endian data set, skipping values.
struct Walker {
    r: BufReader<File>,
    pos: u64,
}

impl Walker {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).ok()?;
        self.pos += N as u64;
        Some(b)
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        // Within the buffer this moves the cursor without a system call.
        self.r.seek_relative(i64::try_from(n).ok()?).ok()?;
        self.pos += n;
        Some(())
    }

    /// The next header: tag, VR (blank for items and delimiters) and value length.
    fn header(&mut self) -> Option<([u8; 4], [u8; 2], u32)> {
        let tag = self.bytes::<4>()?;
        if tag[..2] == [0xFE, 0xFF] {
            return Some((tag, *b"  ", u32::from_le_bytes(self.bytes::<4>()?)));
        }
        let vr = self.bytes::<2>()?;
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return None;
        }
        let len = if LONG_VRS.contains(&vr) {
            self.skip(2)?;
            u32::from_le_bytes(self.bytes::<4>()?)
        } else {
            u32::from(u16::from_le_bytes(self.bytes::<2>()?))
        };
        Some((tag, vr, len))
    }

    /// Skips the value of the element whose header was just read.
    fn skip_value(&mut self, vr: [u8; 2], len: u32) -> Option<()> {
        if len != u32::MAX {
            return self.skip(u64::from(len));
        }
        // Undefined lengths: sequences, and encapsulated pixel data (an icon image's) whose
        // fragments are items too.
        if !matches!(&vr, b"SQ" | b"UN" | b"OB" | b"OW") {
            return None;
        }
        loop {
            match self.header()? {
                (SEQUENCE_END, _, _) => return Some(()),
                (ITEM, _, l) if l != u32::MAX => self.skip(u64::from(l))?,
                (ITEM, _, _) => loop {
                    match self.header()? {
                        (ITEM_END, _, _) => break,
                        (_, vr, len) => self.skip_value(vr, len)?,
                    }
                },
                _ => return None,
            }
        }
    }
}

/// Where the top-level Pixel Data element header starts, found by walking the element headers
/// from the preamble; None if the file does not walk as explicit VR little endian.
fn walk_to_pixel_data(path: &Path) -> std::io::Result<Option<u64>> {
    let mut w = Walker {
        r: BufReader::with_capacity(64 << 10, File::open(path)?),
        pos: 0,
    };
    if w.skip(128).is_none() || w.bytes::<4>() != Some(*b"DICM") {
        return Ok(None);
    }
    loop {
        let start = w.pos;
        let Some((tag, vr, len)) = w.header() else {
            return Ok(None);
        };
        if tag == PIXEL_DATA {
            return Ok(Some(start));
        }
        if w.skip_value(vr, len).is_none() {
            return Ok(None);
        }
    }
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
    if let Some(header) = walk_to_pixel_data(path)? {
        let mut h = [0u8; 12];
        f.seek(SeekFrom::Start(header))?;
        f.read_exact(&mut h)?;
        if h != PIXEL_DATA_OB && h != PIXEL_DATA_OW {
            return Ok(None); // native (not encapsulated) pixel data
        }
        if let Some(items) = items_at(&mut f, header, file_len).filter(|i| !i.is_empty()) {
            return Ok(Some(items[1..].to_vec()));
        }
    }
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

    /// An explicit VR element with a short or long header.
    fn element(tag: [u8; 4], vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = tag.to_vec();
        v.extend_from_slice(vr);
        if LONG_VRS.contains(vr) {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn the_walk_skips_sequences_and_finds_the_top_level_pixel_data() {
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        file.extend(element([2, 0, 0x10, 0], b"UI", b"1.2.840.10008.1.2.4.50"));
        // An undefined-length sequence holding an undefined-length item that nests an icon
        // image's pixel sequence, then a defined-length item.
        file.extend_from_slice(&[0x88, 0, 0, 0x02, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        file.extend_from_slice(&ITEM);
        file.extend_from_slice(&u32::MAX.to_le_bytes());
        file.extend(element([0x28, 0, 0x10, 0], b"US", &[4, 0]));
        file.extend_from_slice(&PIXEL_DATA_OB);
        file.extend(item(&[]));
        file.extend(item(&[7, 7]));
        file.extend_from_slice(&SEQUENCE_END);
        file.extend_from_slice(&[0, 0, 0, 0]);
        file.extend_from_slice(&ITEM_END);
        file.extend_from_slice(&[0, 0, 0, 0]);
        file.extend(item(&[1, 2, 3, 4]));
        file.extend_from_slice(&SEQUENCE_END);
        file.extend_from_slice(&[0, 0, 0, 0]);
        file.extend(element([0x20, 0, 0x13, 0], b"IS", b"1 "));
        let top = file.len() as u64;
        file.extend_from_slice(&PIXEL_DATA_OB);
        file.extend(item(&[]));
        file.extend(item(&[5, 6, 7]));
        file.extend_from_slice(&SEQUENCE_END);
        file.extend_from_slice(&[0, 0, 0, 0]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.dcm");
        std::fs::write(&path, &file).unwrap();
        assert_eq!(walk_to_pixel_data(&path).unwrap(), Some(top));
        let frags = locate(&path).unwrap().unwrap();
        assert_eq!(
            frags,
            vec![Fragment {
                offset: top + 12 + 8 + 8,
                len: 3
            }]
        );
        // Not DICOM Part 10: the walk gives up (the scan takes over).
        std::fs::write(&path, &file[132..]).unwrap();
        assert_eq!(walk_to_pixel_data(&path).unwrap(), None);
    }

    #[test]
    fn the_walk_and_the_scan_agree_on_the_shared_dicom_slides() {
        let dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
            .join("../../../shared/data");
        if !dir.is_dir() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: ../shared is missing ({})",
                dir.display()
            );
            eprintln!("skipped: no ../shared beside the repository");
            return;
        }
        for name in ["boxes_0.dcm", "boxes_1.dcm"] {
            let path = dir.join("pathology").join(name);
            let walked = walk_to_pixel_data(&path).unwrap();
            assert!(walked.is_some(), "{name}: the walk failed");
            // Encapsulated: the scan's last candidate; native: no candidate at all.
            match candidates(&path).unwrap().last() {
                Some(&c) => assert_eq!(walked, Some(c), "{name}"),
                None => {
                    let bytes = std::fs::read(&path).unwrap();
                    let at = walked.unwrap() as usize;
                    assert_eq!(bytes[at..at + 4], PIXEL_DATA, "{name}");
                    assert_ne!(bytes[at + 8..at + 12], [0xFF; 4], "{name}");
                }
            }
        }
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
