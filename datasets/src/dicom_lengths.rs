//! The check that every element length a DICOM file declares fits in the file, made by the
//! domains that read DICOM before they parse a file: dicom-rs allocates (and zero-fills) a
//! value's declared length before reading it, so one damaged length field in a few-kB file would
//! take up to 4 GiB of memory. It knows no DICOM library: the caller says which tags are
//! sequences (for implicit VR, from its data dictionary).
//!
//! Element headers are walked (PS3.5 7.1): the file meta group in explicit VR little endian, the
//! data set in the transfer syntax it names (implicit VR little endian, explicit VR little or
//! big endian; a deflated data set is not walked). Sequences and items are entered, so nested
//! lengths are checked too; fragments of encapsulated pixel data are skipped. Where the headers
//! stop making sense the walk ends and the parser gives its own error.

use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// A DICOM tag: (group, element).
pub type Tag = (u16, u16);

/// VRs whose explicit-VR header has two reserved bytes and a 4-byte length (PS3.5 7.1.2).
const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];
/// Every VR of PS3.5 6.2.
const KNOWN_VRS: [&[u8; 2]; 34] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
];
const UNDEFINED: u32 = u32::MAX;
const ITEM: Tag = (0xFFFE, 0xE000);
const ITEM_END: Tag = (0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = (0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = (0x7FE0, 0x0010);

#[derive(Clone, Copy)]
enum Encoding {
    ExplicitLittle,
    ImplicitLittle,
    ExplicitBig,
}

struct Walker<R, S> {
    r: R,
    pos: u64,
    len: u64,
    /// Whether a tag's value is a sequence (asked in implicit VR only).
    is_sequence: S,
}

impl<R: Read + Seek, S: Fn(Tag) -> bool> Walker<R, S> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).ok()?;
        self.pos += N as u64;
        Some(b)
    }

    fn u16(&mut self, big: bool) -> Option<u16> {
        let b = self.bytes::<2>()?;
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&mut self, big: bool) -> Option<u32> {
        let b = self.bytes::<4>()?;
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        self.r.seek_relative(i64::try_from(n).ok()?).ok()?;
        self.pos += n;
        Some(())
    }

    /// Why element `tag`, whose header ends here, cannot be read: `len` runs past the file.
    fn too_long(&self, tag: Tag, len: u32) -> String {
        format!(
            "element ({:04X},{:04X}) at byte {} declares {len} bytes but the file has {} left",
            tag.0,
            tag.1,
            self.pos,
            self.len - self.pos
        )
    }

    /// The next header: tag, whether its value is a sequence, and its length.
    fn header(&mut self, enc: Encoding) -> Option<(Tag, bool, u32)> {
        let big = matches!(enc, Encoding::ExplicitBig);
        let tag = (self.u16(big)?, self.u16(big)?);
        if tag.0 == 0xFFFE {
            return Some((tag, false, self.u32(big)?));
        }
        match enc {
            Encoding::ImplicitLittle => {
                let len = self.u32(false)?;
                let sequence = (self.is_sequence)(tag);
                Some((tag, sequence, len))
            }
            Encoding::ExplicitLittle | Encoding::ExplicitBig => {
                let mut vr = self.bytes::<2>()?;
                // An unknown VR is read as UN (a 4-byte length), as dicom-rs reads it.
                if !KNOWN_VRS.contains(&&vr) {
                    vr = *b"UN";
                }
                let len = if LONG_VRS.contains(&&vr) {
                    self.skip(2)?;
                    self.u32(big)?
                } else {
                    u32::from(self.u16(big)?)
                };
                Some((tag, &vr == b"SQ", len))
            }
        }
    }

    /// Walks headers until the end of the file (or a top-level `stop`, or headers that make no
    /// sense); the first length that runs past the end of the file is the error.
    fn walk(&mut self, enc: Encoding, stop: Option<Tag>) -> Result<(), String> {
        // Where each open sequence or item ends: a position, or a delimiter (undefined length).
        let mut open: Vec<Option<u64>> = Vec::new();
        // Inside encapsulated pixel data, items are fragments (skipped), not data sets.
        let mut fragments = false;
        while self.pos < self.len {
            while open
                .last()
                .is_some_and(|end| end.is_some_and(|e| e <= self.pos))
            {
                open.pop();
            }
            let Some((tag, sequence, len)) = self.header(enc) else {
                return Ok(());
            };
            let past_end = len != UNDEFINED && u64::from(len) > self.len - self.pos;
            if open.is_empty() && tag.0 != 0xFFFE && stop.is_some_and(|s| tag >= s) {
                // The parser stops here, but reads a damaged element past the stop tag (the
                // stop tag itself, pixel data, may be cut short: it is not read).
                return match Some(tag) == stop || !past_end {
                    true => Ok(()),
                    false => Err(self.too_long(tag, len)),
                };
            }
            if past_end {
                return Err(self.too_long(tag, len));
            }
            if tag == ITEM_END || tag == SEQUENCE_END {
                open.pop();
                fragments &= tag != SEQUENCE_END;
                continue;
            }
            if tag == PIXEL_DATA && len == UNDEFINED {
                fragments = true;
            }
            let enter = len == UNDEFINED || sequence || (tag == ITEM && !fragments);
            if enter {
                open.push((len != UNDEFINED).then(|| self.pos + u64::from(len)));
            } else if self.skip(u64::from(len)).is_none() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// `Err` with the reason when an element of the DICOM file at `path` declares a length that
/// runs past the end of the file (elements before `stop`, when given). `is_sequence` says which
/// tags hold sequences in an implicit-VR data set. Files without the `DICM` magic code or the
/// file meta group length, and deflated data sets over 64 MiB, pass: the parser judges them.
pub fn check_dicom_lengths(
    path: &Path,
    stop: Option<Tag>,
    is_sequence: impl Fn(Tag) -> bool,
) -> std::io::Result<Result<(), String>> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut w = Walker {
        r: BufReader::with_capacity(64 << 10, file),
        pos: 0,
        len,
        is_sequence,
    };
    // `DICM` after the 128-byte preamble or, as dicom-rs also reads it, at the very start.
    if w.skip(128).is_none() || w.bytes::<4>() != Some(*b"DICM") {
        w.r.rewind()?;
        w.pos = 0;
        if w.bytes::<4>() != Some(*b"DICM") {
            return Ok(Ok(()));
        }
    }
    // The file meta group: explicit VR little endian, led by its group length (0002,0000);
    // the parser reads elements, whatever their group, until that many bytes are read, and the
    // data set starts there (a file without the group length is refused by the parser).
    match w.header(Encoding::ExplicitLittle) {
        Some(((0x0002, 0x0000), _, 4)) => {}
        _ => return Ok(Ok(())),
    }
    let Some(group_length) = w.u32(false) else {
        return Ok(Ok(()));
    };
    let meta_start = w.pos;
    let mut syntax = String::new();
    while w.pos - meta_start < u64::from(group_length) {
        let Some((tag, _, len)) = w.header(Encoding::ExplicitLittle) else {
            return Ok(Ok(()));
        };
        if len == UNDEFINED {
            return Ok(Ok(()));
        }
        if u64::from(len) > w.len - w.pos {
            return Ok(Err(format!(
                "file meta element ({:04X},{:04X}) declares {len} bytes but the file has {} left",
                tag.0,
                tag.1,
                w.len - w.pos
            )));
        }
        if tag == (0x0002, 0x0010) && len <= 64 {
            let mut v = vec![0u8; len as usize];
            w.r.read_exact(&mut v)?;
            w.pos += u64::from(len);
            syntax = String::from_utf8_lossy(&v)
                .trim_end_matches(['\0', ' '])
                .to_string();
        } else if w.skip(u64::from(len)).is_none() {
            return Ok(Ok(()));
        }
    }
    let enc = match syntax.as_str() {
        "1.2.840.10008.1.2" => Encoding::ImplicitLittle,
        "1.2.840.10008.1.2.2" => Encoding::ExplicitBig,
        "1.2.840.10008.1.2.1.99" => return Ok(check_deflated(w, stop)),
        _ => Encoding::ExplicitLittle,
    };
    Ok(w.walk(enc, stop))
}

/// The largest deflated data set whose lengths are checked (inflated in memory); a larger one
/// is left to the parser.
const MAX_INFLATED: u64 = 64 << 20;

/// Checks a deflated data set (explicit VR little endian once inflated, PS3.5 A.5).
fn check_deflated<R: Read + Seek, S: Fn(Tag) -> bool>(
    w: Walker<R, S>,
    stop: Option<Tag>,
) -> Result<(), String> {
    let mut inflated = Vec::new();
    let mut decoder = flate2::read::DeflateDecoder::new(w.r).take(MAX_INFLATED + 1);
    // A damaged stream is walked as far as it inflates: the parser cannot read past that either.
    let _ = decoder.read_to_end(&mut inflated);
    if inflated.len() as u64 > MAX_INFLATED {
        return Ok(());
    }
    let len = inflated.len() as u64;
    let mut inner = Walker {
        r: std::io::Cursor::new(inflated),
        pos: 0,
        len,
        is_sequence: w.is_sequence,
    };
    inner.walk(Encoding::ExplicitLittle, stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file: preamble, `DICM`, a file meta group naming `syntax`, then `body`.
    fn file(syntax: &str, body: &[u8]) -> tempfile::NamedTempFile {
        file_with_meta(syntax, &[], body)
    }

    /// A file whose file meta group (its group length counting them) ends with `extra_meta`.
    fn file_with_meta(syntax: &str, extra_meta: &[u8], body: &[u8]) -> tempfile::NamedTempFile {
        let mut uid = syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let mut meta = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I'];
        meta.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        meta.extend_from_slice(&uid);
        meta.extend_from_slice(extra_meta);
        let mut b = vec![0u8; 128];
        b.extend_from_slice(b"DICM");
        b.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        b.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        b.extend_from_slice(&meta);
        b.extend_from_slice(body);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &b).unwrap();
        f
    }

    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

    /// (0010,0010) PN "Doe^J" and (0028,0010) US 8, explicit VR little endian.
    fn good_body() -> Vec<u8> {
        let mut b = vec![0x10, 0x00, 0x10, 0x00, b'P', b'N', 6, 0];
        b.extend_from_slice(b"Doe^J ");
        b.extend_from_slice(&[0x28, 0x00, 0x10, 0x00, b'U', b'S', 2, 0, 8, 0]);
        b
    }

    fn check(f: &tempfile::NamedTempFile) -> Result<(), String> {
        check_dicom_lengths(f.path(), None, |_| false).unwrap()
    }

    #[test]
    fn lengths_that_fit_pass() {
        assert_eq!(check(&file(EXPLICIT_LE, &good_body())), Ok(()));
    }

    #[test]
    fn a_length_past_the_end_is_refused_with_the_element() {
        let mut body = good_body();
        body.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
        body.extend_from_slice(&0x4000_0000u32.to_le_bytes());
        let err = check(&file(EXPLICIT_LE, &body)).unwrap_err();
        assert!(
            err.contains("(7FE0,0010)") && err.contains("1073741824"),
            "{err}"
        );
    }

    /// A damaged VR is read as UN with a 4-byte length, as dicom-rs reads it (found by
    /// fuzz_dicom_wsi_frames: one inserted byte made a 1.4 GB value of a 5 kB file).
    #[test]
    fn an_unknown_vr_is_checked_as_un() {
        let mut body = good_body();
        body.extend_from_slice(&[0x08, 0x00, 0x02, 0x01, 0x01, b'S', 0x00, 0x00]);
        body.extend_from_slice(&0x5443_5300u32.to_le_bytes());
        assert!(check(&file(EXPLICIT_LE, &body)).is_err());
    }

    #[test]
    fn lengths_inside_sequences_and_items_are_checked() {
        // (0040,0275) SQ of undefined length, one item of undefined length holding a lying
        // (0008,0100) SH.
        let mut body = vec![
            0x40, 0x00, 0x75, 0x02, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        body.extend_from_slice(&[0x08, 0x00, 0x00, 0x01, b'S', b'H', 0xF0, 0xFF]);
        assert!(check(&file(EXPLICIT_LE, &body)).is_err());
    }

    #[test]
    fn implicit_vr_asks_which_tags_are_sequences() {
        // (0040,0275) with a defined length of 16 holding an item with a lying element.
        let mut body = vec![0x40, 0x00, 0x75, 0x02, 16, 0, 0, 0];
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 8, 0, 0, 0]);
        body.extend_from_slice(&[0x08, 0x00, 0x00, 0x01, 0xF0, 0xFF, 0xFF, 0x0F]);
        let f = file("1.2.840.10008.1.2", &body);
        let entered = check_dicom_lengths(f.path(), None, |t| t == (0x0040, 0x0275)).unwrap();
        assert!(entered.is_err());
        // Taken as an opaque value, the sequence fits.
        assert_eq!(check(&f), Ok(()));
    }

    #[test]
    fn elements_from_the_stop_tag_on_are_not_checked() {
        let mut body = good_body();
        body.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
        body.extend_from_slice(&0x4000_0000u32.to_le_bytes());
        let f = file(EXPLICIT_LE, &body);
        assert_eq!(
            check_dicom_lengths(f.path(), Some(PIXEL_DATA), |_| false).unwrap(),
            Ok(())
        );
    }

    /// Nested elements past the stop tag are still read by the parser, so still checked (found
    /// by fuzz_dicom_wsi_frames: a damaged tag in a sequence read as (FE00,DDFF) hid a 0.8 GB
    /// length from a check that stopped there).
    #[test]
    fn the_stop_tag_applies_at_the_top_level_only() {
        let mut body = vec![
            0x40, 0x00, 0x75, 0x02, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        body.extend_from_slice(&[0x00, 0xFE, 0xFF, 0xDD, b'U', b'N', 0, 0]);
        body.extend_from_slice(&0x3000_0000u32.to_le_bytes());
        let f = file(EXPLICIT_LE, &body);
        assert!(check_dicom_lengths(f.path(), Some(PIXEL_DATA), |_| false)
            .unwrap()
            .is_err());
    }

    /// The parser reads the file meta group by its group length, whatever the groups of the
    /// elements in it; so does the check (found by fuzz_dicom_wsi_frames: a damaged tag group in
    /// the meta group made the check start the data set early, the parser read on and met a
    /// 1.4 GB length).
    #[test]
    fn the_data_set_starts_where_the_meta_group_length_says() {
        // An off-group (0008,0005) CS "ISO_IR 100" inside the meta group, explicit VR like the
        // rest of it; the implicit-VR data set after it is sound. Read as the start of the
        // implicit data set, "CS" and its length would make a 167 MB value.
        let mut extra = vec![0x08, 0x00, 0x05, 0x00, b'C', b'S', 10, 0];
        extra.extend_from_slice(b"ISO_IR 100");
        let body = [
            0x10, 0x00, 0x10, 0x00, 6, 0, 0, 0, b'D', b'o', b'e', b'^', b'J', b' ',
        ];
        let f = file_with_meta("1.2.840.10008.1.2", &extra, &body);
        assert_eq!(check(&f), Ok(()));
        // A lying element in that data set is still found.
        let mut lying = body.to_vec();
        lying.extend_from_slice(&[0x28, 0x00, 0x10, 0x00, 0, 0, 0, 0x40]);
        let f = file_with_meta("1.2.840.10008.1.2", &extra, &lying);
        assert!(check(&f).is_err());
    }

    #[test]
    fn a_file_meta_group_without_its_group_length_is_left_to_the_parser() {
        let mut b = vec![0u8; 128];
        b.extend_from_slice(b"DICM");
        b.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I', 2, 0, b'1', 0]);
        b.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 0, 0, 0, 0x40]);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &b).unwrap();
        assert_eq!(check(&f), Ok(()));
    }

    #[test]
    fn a_file_without_the_128_byte_preamble_is_checked_too() {
        let mut body = good_body();
        body.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
        body.extend_from_slice(&0x4000_0000u32.to_le_bytes());
        let f = file(EXPLICIT_LE, &body);
        let bytes = std::fs::read(f.path()).unwrap();
        std::fs::write(f.path(), &bytes[128..]).unwrap();
        assert!(check(&f).is_err());
    }

    #[test]
    fn files_without_the_dicm_magic_are_left_to_the_parser() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"not dicom").unwrap();
        assert_eq!(check(&f), Ok(()));
    }
}
