//! NIfTI-1 (348-byte) and NIfTI-2 (540-byte) headers: parse and encode, both byte orders.
//!
//! Only the fields this crate uses are kept; everything else is written as zeros.

/// Which NIfTI format a header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NiftiVersion {
    /// NIfTI-1: 348-byte header, 16-bit dims, 32-bit floats.
    V1,
    /// NIfTI-2: 540-byte header, 64-bit dims, 64-bit floats.
    V2,
}

impl NiftiVersion {
    /// 1 or 2.
    pub fn number(self) -> u8 {
        match self {
            NiftiVersion::V1 => 1,
            NiftiVersion::V2 => 2,
        }
    }

    /// Header size in bytes.
    pub fn header_size(self) -> usize {
        layout(self).size
    }
}

/// Voxel datatypes this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NiftiDatatype {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl NiftiDatatype {
    /// The NIfTI `datatype` code.
    pub fn code(self) -> i16 {
        match self {
            NiftiDatatype::U8 => 2,
            NiftiDatatype::I16 => 4,
            NiftiDatatype::I32 => 8,
            NiftiDatatype::F32 => 16,
            NiftiDatatype::F64 => 64,
            NiftiDatatype::I8 => 256,
            NiftiDatatype::U16 => 512,
            NiftiDatatype::U32 => 768,
            NiftiDatatype::I64 => 1024,
            NiftiDatatype::U64 => 1280,
        }
    }

    /// The datatype for a code; `Err(name)` names a known but unsupported code.
    pub fn from_code(code: i16) -> Result<Self, &'static str> {
        Ok(match code {
            2 => NiftiDatatype::U8,
            4 => NiftiDatatype::I16,
            8 => NiftiDatatype::I32,
            16 => NiftiDatatype::F32,
            64 => NiftiDatatype::F64,
            256 => NiftiDatatype::I8,
            512 => NiftiDatatype::U16,
            768 => NiftiDatatype::U32,
            1024 => NiftiDatatype::I64,
            1280 => NiftiDatatype::U64,
            0 => return Err("unknown"),
            1 => return Err("binary"),
            32 => return Err("complex64"),
            128 => return Err("RGB24"),
            255 => return Err("all"),
            1536 => return Err("float128"),
            1792 => return Err("complex128"),
            2048 => return Err("complex256"),
            2304 => return Err("RGBA32"),
            _ => return Err("not a NIfTI datatype"),
        })
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            NiftiDatatype::U8 | NiftiDatatype::I8 => 1,
            NiftiDatatype::I16 | NiftiDatatype::U16 => 2,
            NiftiDatatype::I32 | NiftiDatatype::U32 | NiftiDatatype::F32 => 4,
            NiftiDatatype::I64 | NiftiDatatype::U64 | NiftiDatatype::F64 => 8,
        }
    }

    /// numpy's name of the type ("int16", "float32", ...).
    pub fn numpy_name(self) -> &'static str {
        match self {
            NiftiDatatype::U8 => "uint8",
            NiftiDatatype::I8 => "int8",
            NiftiDatatype::I16 => "int16",
            NiftiDatatype::U16 => "uint16",
            NiftiDatatype::I32 => "int32",
            NiftiDatatype::U32 => "uint32",
            NiftiDatatype::I64 => "int64",
            NiftiDatatype::U64 => "uint64",
            NiftiDatatype::F32 => "float32",
            NiftiDatatype::F64 => "float64",
        }
    }

    /// numpy's kind+size code ("i2", "f4", ...).
    pub fn numpy_code(self) -> &'static str {
        match self {
            NiftiDatatype::U8 => "u1",
            NiftiDatatype::I8 => "i1",
            NiftiDatatype::I16 => "i2",
            NiftiDatatype::U16 => "u2",
            NiftiDatatype::I32 => "i4",
            NiftiDatatype::U32 => "u4",
            NiftiDatatype::I64 => "i8",
            NiftiDatatype::U64 => "u8",
            NiftiDatatype::F32 => "f4",
            NiftiDatatype::F64 => "f8",
        }
    }

    /// numpy's `dtype.str` for data in this byte order: "|u1", "<i2", ">f4".
    pub fn numpy_descr(self, little_endian: bool) -> String {
        let order = if self.size() == 1 {
            '|'
        } else if little_endian {
            '<'
        } else {
            '>'
        };
        format!("{order}{}", self.numpy_code())
    }

    /// What `str(img.get_data_dtype())` prints in nibabel on a little-endian machine: the plain
    /// name for native (little-endian or one-byte) data, ">i2"-style for big-endian data.
    pub fn numpy_str(self, little_endian: bool) -> String {
        if little_endian || self.size() == 1 {
            self.numpy_name().to_string()
        } else {
            self.numpy_descr(false)
        }
    }

    /// The NIfTI `bitpix` value.
    pub fn bitpix(self) -> i16 {
        (self.size() * 8) as i16
    }
}

/// The header fields this crate uses, as stored (NIfTI-1 values widened to f64 / i64).
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiHeader {
    pub version: NiftiVersion,
    /// Byte order of the header and data.
    pub little_endian: bool,
    /// `dim[0]` = number of dimensions, `dim[1..=dim[0]]` their sizes.
    pub dim: [i64; 8],
    /// The raw `datatype` code.
    pub datatype: i16,
    pub bitpix: i16,
    /// `pixdim[0]` = qfac, `pixdim[1..]` = zooms.
    pub pixdim: [f64; 8],
    /// Byte offset of the voxel data in a single-file (.nii) image.
    pub vox_offset: f64,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub cal_max: f64,
    pub cal_min: f64,
    pub slice_duration: f64,
    pub toffset: f64,
    pub qform_code: i32,
    pub sform_code: i32,
    /// quatern_b, quatern_c, quatern_d.
    pub quatern: [f64; 3],
    /// qoffset_x, qoffset_y, qoffset_z.
    pub qoffset: [f64; 3],
    /// srow_x, srow_y, srow_z.
    pub srow: [[f64; 4]; 3],
    pub xyzt_units: i32,
    pub intent_code: i32,
    /// Free text (80 bytes at most).
    pub descrip: String,
}

/// Byte offsets of one header version. Ints are (offset, width); floats have width 4 (v1) or 8.
struct Layout {
    size: usize,
    magic: (usize, &'static [u8]),
    dim: (usize, usize),
    datatype: usize,
    bitpix: usize,
    float: usize,
    pixdim: usize,
    vox_offset: usize,
    scl_slope: usize,
    scl_inter: usize,
    cal_max: usize,
    cal_min: usize,
    slice_duration: usize,
    toffset: usize,
    descrip: usize,
    qform_code: (usize, usize),
    sform_code: (usize, usize),
    quatern_b: usize,
    srow_x: usize,
    xyzt_units: (usize, usize),
    intent_code: (usize, usize),
}

const V1: Layout = Layout {
    size: 348,
    magic: (344, b"n+1\0"),
    dim: (40, 2),
    datatype: 70,
    bitpix: 72,
    float: 4,
    pixdim: 76,
    vox_offset: 108,
    scl_slope: 112,
    scl_inter: 116,
    cal_max: 124,
    cal_min: 128,
    slice_duration: 132,
    toffset: 136,
    descrip: 148,
    qform_code: (252, 2),
    sform_code: (254, 2),
    quatern_b: 256,
    srow_x: 280,
    xyzt_units: (123, 1),
    intent_code: (68, 2),
};

const V2: Layout = Layout {
    size: 540,
    magic: (4, b"n+2\0\r\n\x1a\n"),
    dim: (16, 8),
    datatype: 12,
    bitpix: 14,
    float: 8,
    pixdim: 104,
    vox_offset: 168,
    scl_slope: 176,
    scl_inter: 184,
    cal_max: 192,
    cal_min: 200,
    slice_duration: 208,
    toffset: 216,
    descrip: 240,
    qform_code: (344, 4),
    sform_code: (348, 4),
    quatern_b: 352,
    srow_x: 400,
    xyzt_units: (500, 4),
    intent_code: (504, 4),
};

fn layout(v: NiftiVersion) -> &'static Layout {
    match v {
        NiftiVersion::V1 => &V1,
        NiftiVersion::V2 => &V2,
    }
}

struct Reader<'a> {
    b: &'a [u8],
    le: bool,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.b[off..off + N]);
        if !self.le {
            a.reverse();
        }
        a
    }
    fn int(&self, (off, width): (usize, usize)) -> i64 {
        match width {
            1 => i64::from(self.b[off]),
            2 => i64::from(i16::from_le_bytes(self.bytes(off))),
            4 => i64::from(i32::from_le_bytes(self.bytes(off))),
            _ => i64::from_le_bytes(self.bytes(off)),
        }
    }
    fn float(&self, off: usize, width: usize) -> f64 {
        if width == 4 {
            f64::from(f32::from_le_bytes(self.bytes(off)))
        } else {
            f64::from_le_bytes(self.bytes(off))
        }
    }
}

struct Writer {
    b: Vec<u8>,
    le: bool,
}

impl Writer {
    fn put(&mut self, off: usize, mut bytes: Vec<u8>) {
        if !self.le {
            bytes.reverse();
        }
        self.b[off..off + bytes.len()].copy_from_slice(&bytes);
    }
    fn int(&mut self, (off, width): (usize, usize), v: i64) {
        match width {
            1 => self.b[off] = v as u8,
            2 => self.put(off, (v as i16).to_le_bytes().to_vec()),
            4 => self.put(off, (v as i32).to_le_bytes().to_vec()),
            _ => self.put(off, v.to_le_bytes().to_vec()),
        }
    }
    fn float(&mut self, off: usize, width: usize, v: f64) {
        if width == 4 {
            self.put(off, (v as f32).to_le_bytes().to_vec());
        } else {
            self.put(off, v.to_le_bytes().to_vec());
        }
    }
}

impl NiftiHeader {
    /// Parses a header from the start of `bytes` (the whole decompressed file or at least the
    /// header). The error is a human-readable reason.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 4 {
            return Err(format!(
                "file too short for a header ({} bytes)",
                bytes.len()
            ));
        }
        let raw: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
        let (version, le) = match (i32::from_le_bytes(raw), i32::from_be_bytes(raw)) {
            (348, _) => (NiftiVersion::V1, true),
            (_, 348) => (NiftiVersion::V1, false),
            (540, _) => (NiftiVersion::V2, true),
            (_, 540) => (NiftiVersion::V2, false),
            (n, _) => {
                return Err(format!(
                    "sizeof_hdr is {n} (expected 348 for NIfTI-1 or 540 for NIfTI-2)"
                ))
            }
        };
        let l = layout(version);
        if bytes.len() < l.size {
            return Err(format!(
                "file has {} bytes, shorter than the {}-byte NIfTI-{} header",
                bytes.len(),
                l.size,
                version.number()
            ));
        }
        let magic = &bytes[l.magic.0..l.magic.0 + l.magic.1.len()];
        let magic_ok = match version {
            NiftiVersion::V1 => magic == b"n+1\0" || magic == b"ni1\0",
            NiftiVersion::V2 => magic == b"n+2\0\r\n\x1a\n" || magic == b"ni2\0\r\n\x1a\n",
        };
        if !magic_ok {
            return Err(format!(
                "bad magic {:?} for NIfTI-{} (an ANALYZE 7.5 file is not supported)",
                String::from_utf8_lossy(magic),
                version.number()
            ));
        }
        let r = Reader { b: bytes, le };
        let f = l.float;
        let mut dim = [0i64; 8];
        for (i, d) in dim.iter_mut().enumerate() {
            *d = r.int((l.dim.0 + i * l.dim.1, l.dim.1));
        }
        let mut pixdim = [0f64; 8];
        for (i, p) in pixdim.iter_mut().enumerate() {
            *p = r.float(l.pixdim + i * f, f);
        }
        let vox_offset = match version {
            NiftiVersion::V1 => r.float(l.vox_offset, 4),
            NiftiVersion::V2 => r.int((l.vox_offset, 8)) as f64,
        };
        let mut srow = [[0f64; 4]; 3];
        for (i, row) in srow.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = r.float(l.srow_x + (i * 4 + j) * f, f);
            }
        }
        let q = |i: usize| r.float(l.quatern_b + i * f, f);
        let descrip = &bytes[l.descrip..l.descrip + 80];
        let end = descrip.iter().position(|&c| c == 0).unwrap_or(80);
        Ok(NiftiHeader {
            version,
            little_endian: le,
            dim,
            datatype: r.int((l.datatype, 2)) as i16,
            bitpix: r.int((l.bitpix, 2)) as i16,
            pixdim,
            vox_offset,
            scl_slope: r.float(l.scl_slope, f),
            scl_inter: r.float(l.scl_inter, f),
            cal_max: r.float(l.cal_max, f),
            cal_min: r.float(l.cal_min, f),
            slice_duration: r.float(l.slice_duration, f),
            toffset: r.float(l.toffset, f),
            qform_code: r.int(l.qform_code) as i32,
            sform_code: r.int(l.sform_code) as i32,
            quatern: [q(0), q(1), q(2)],
            qoffset: [q(3), q(4), q(5)],
            srow,
            xyzt_units: r.int(l.xyzt_units) as i32,
            intent_code: r.int(l.intent_code) as i32,
            descrip: String::from_utf8_lossy(&descrip[..end]).into_owned(),
        })
    }

    /// Encodes the header (exactly `version.header_size()` bytes) for a single-file image.
    pub fn encode(&self) -> Vec<u8> {
        let l = layout(self.version);
        let f = l.float;
        let mut w = Writer {
            b: vec![0u8; l.size],
            le: self.little_endian,
        };
        w.int((0, 4), l.size as i64);
        w.b[l.magic.0..l.magic.0 + l.magic.1.len()].copy_from_slice(l.magic.1);
        if self.version == NiftiVersion::V1 {
            w.b[38] = b'r'; // "regular", as nibabel writes
        }
        for (i, d) in self.dim.iter().enumerate() {
            w.int((l.dim.0 + i * l.dim.1, l.dim.1), *d);
        }
        w.int((l.datatype, 2), i64::from(self.datatype));
        w.int((l.bitpix, 2), i64::from(self.bitpix));
        for (i, p) in self.pixdim.iter().enumerate() {
            w.float(l.pixdim + i * f, f, *p);
        }
        match self.version {
            NiftiVersion::V1 => w.float(l.vox_offset, 4, self.vox_offset),
            NiftiVersion::V2 => w.int((l.vox_offset, 8), self.vox_offset as i64),
        }
        w.float(l.scl_slope, f, self.scl_slope);
        w.float(l.scl_inter, f, self.scl_inter);
        w.float(l.cal_max, f, self.cal_max);
        w.float(l.cal_min, f, self.cal_min);
        w.float(l.slice_duration, f, self.slice_duration);
        w.float(l.toffset, f, self.toffset);
        let d = self.descrip.as_bytes();
        let n = d.len().min(79);
        w.b[l.descrip..l.descrip + n].copy_from_slice(&d[..n]);
        w.int(l.qform_code, i64::from(self.qform_code));
        w.int(l.sform_code, i64::from(self.sform_code));
        for (i, v) in self.quatern.iter().chain(self.qoffset.iter()).enumerate() {
            w.float(l.quatern_b + i * f, f, *v);
        }
        for (i, row) in self.srow.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                w.float(l.srow_x + (i * 4 + j) * f, f, *v);
            }
        }
        w.int(l.xyzt_units, i64::from(self.xyzt_units));
        w.int(l.intent_code, i64::from(self.intent_code));
        w.b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(version: NiftiVersion, le: bool) -> NiftiHeader {
        NiftiHeader {
            version,
            little_endian: le,
            dim: [4, 3, 4, 5, 2, 1, 1, 1],
            datatype: 4,
            bitpix: 16,
            pixdim: [-1.0, 0.5, 0.75, 2.0, 1.5, 0.0, 0.0, 0.0],
            vox_offset: if version == NiftiVersion::V1 {
                352.0
            } else {
                544.0
            },
            scl_slope: 2.0,
            scl_inter: -3.0,
            cal_max: 0.0,
            cal_min: 0.0,
            slice_duration: 0.0,
            toffset: 0.0,
            qform_code: 1,
            sform_code: 2,
            quatern: [0.25, -0.5, 0.125],
            qoffset: [10.0, -20.5, 3.25],
            srow: [
                [1.0, 2.0, 3.0, 4.0],
                [5.0, 6.0, 7.0, 8.0],
                [9.0, 10.0, 11.0, 12.0],
            ],
            xyzt_units: 10,
            intent_code: 0,
            descrip: "hello".into(),
        }
    }

    #[test]
    fn encode_parse_roundtrip_all_versions_and_orders() {
        for version in [NiftiVersion::V1, NiftiVersion::V2] {
            for le in [true, false] {
                let h = sample(version, le);
                let bytes = h.encode();
                assert_eq!(bytes.len(), version.header_size());
                assert_eq!(NiftiHeader::parse(&bytes).unwrap(), h);
            }
        }
    }

    #[test]
    fn garbage_is_rejected_with_reason() {
        assert!(NiftiHeader::parse(b"abc")
            .unwrap_err()
            .contains("too short"));
        assert!(NiftiHeader::parse(&[7u8; 400])
            .unwrap_err()
            .contains("sizeof_hdr"));
        let mut b = sample(NiftiVersion::V1, true).encode();
        b[344] = b'x';
        assert!(NiftiHeader::parse(&b).unwrap_err().contains("magic"));
        let b = sample(NiftiVersion::V2, true).encode();
        assert!(NiftiHeader::parse(&b[..300])
            .unwrap_err()
            .contains("shorter"));
    }

    #[test]
    fn dtype_strings_like_numpy() {
        assert_eq!(NiftiDatatype::I16.numpy_str(false), ">i2");
        assert_eq!(NiftiDatatype::I16.numpy_str(true), "int16");
        assert_eq!(NiftiDatatype::U8.numpy_str(false), "uint8");
        assert_eq!(NiftiDatatype::U8.numpy_descr(false), "|u1");
        assert_eq!(NiftiDatatype::F32.numpy_descr(true), "<f4");
        for code in [2, 4, 8, 16, 64, 256, 512, 768, 1024, 1280] {
            assert_eq!(NiftiDatatype::from_code(code).unwrap().code(), code);
        }
        assert_eq!(NiftiDatatype::from_code(128), Err("RGB24"));
    }
}
