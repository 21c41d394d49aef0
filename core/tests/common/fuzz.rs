//! Seeded mutation fuzzing of parser entry points, shared by the `fuzz_*` tests of each crate
//! (included with `#[path]`). Real samples are mutated (bit flips, byte inserts and deletes,
//! truncation, splicing from another sample, numeric fields set to extremes) and fed to a
//! parser, which must not panic, must not ask for more than [`ALLOCATION_BOUND`] bytes at once,
//! and must refuse bad input with an error that says something.
//!
//! Cases per entry point: [`DEFAULT_CASES`], or `DINOADAPT_FUZZ_CASES` for a long run; the seed
//! is fixed per entry point (mixed with `DINOADAPT_FUZZ_SEED` when set), so a failure reproduces.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestRunner};

/// Cases per entry point when `DINOADAPT_FUZZ_CASES` is not set (the CI run).
pub const DEFAULT_CASES: u32 = 256;

/// The largest single allocation a parser may ask for while it reads a mutated sample (the
/// samples are at most a few MB; a larger request means a header field was trusted).
pub const ALLOCATION_BOUND: usize = 256 << 20;

static LARGEST_REFUSED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The largest request refused on this thread since the case began.
    static REFUSED_HERE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn refuse(size: usize) -> *mut u8 {
    LARGEST_REFUSED.fetch_max(size, Ordering::Relaxed);
    let _ = REFUSED_HERE.try_with(|r| r.set(r.get().max(size)));
    // Where the request came from, on demand (only small allocations are made here).
    if std::env::var_os("DINOADAPT_FUZZ_BACKTRACE").is_some() {
        eprintln!(
            "refused {size} bytes at\n{}",
            std::backtrace::Backtrace::force_capture()
        );
    }
    std::ptr::null_mut()
}

/// The system allocator, refusing any single request over [`ALLOCATION_BOUND`]: an infallible
/// allocation then aborts the test binary with "memory allocation of N bytes failed" instead of
/// taking the machine's memory, and a fallible one (`try_reserve`) gets its error.
pub struct BoundedAlloc;

// SAFETY: every call is forwarded to `System` unchanged, or answered with null (allowed).
unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_BOUND {
            return refuse(layout.size());
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_BOUND {
            return refuse(layout.size());
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_BOUND {
            return refuse(new_size);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The largest request [`BoundedAlloc`] refused so far on any thread (0: none).
pub fn largest_refused() -> usize {
    LARGEST_REFUSED.load(Ordering::Relaxed)
}

/// `f`'s result, and the largest request over [`ALLOCATION_BOUND`] it made on this thread
/// (0: none).
pub fn refused_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    REFUSED_HERE.with(|r| r.set(0));
    let out = f();
    (out, REFUSED_HERE.with(|r| r.get()))
}

/// Cases per entry point: `DINOADAPT_FUZZ_CASES`, else [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    match std::env::var("DINOADAPT_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("DINOADAPT_FUZZ_CASES={v:?} is not a number of cases")),
        Err(_) => DEFAULT_CASES,
    }
}

/// The fixed seed of one entry point: a hash of its name, mixed with `DINOADAPT_FUZZ_SEED`.
fn seed(entry_point: &str) -> u64 {
    let extra: u64 = std::env::var("DINOADAPT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ extra;
    for b in entry_point.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One real input file.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Byte offsets of the format's numeric fields in this sample (header sizes, dimensions,
    /// offsets), which [`Mutation::Extreme`] sets more often than random places.
    pub fields: Vec<usize>,
}

impl Sample {
    pub fn read(path: &Path) -> Sample {
        Sample {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            fields: Vec::new(),
        }
    }

    pub fn text(name: &str, text: &str) -> Sample {
        Sample {
            name: name.into(),
            bytes: text.as_bytes().to_vec(),
            fields: Vec::new(),
        }
    }

    /// The sample with the offsets of its numeric fields.
    pub fn with_fields(mut self, fields: Vec<usize>) -> Sample {
        self.fields = fields;
        self
    }
}

/// A value written over a numeric field.
#[derive(Debug, Clone, Copy)]
pub enum Extreme {
    Zero,
    AllOnes,
    SignedMax,
    SignedMin,
    FloatNan,
    FloatInfinity,
    FloatHuge,
}

impl Extreme {
    fn bytes(self, width: usize, big_endian: bool) -> Vec<u8> {
        let mut b: Vec<u8> = match (self, width) {
            (Extreme::Zero, w) => vec![0; w],
            (Extreme::AllOnes, w) => vec![0xff; w],
            (Extreme::SignedMax, w) => {
                let mut v = vec![0xff; w];
                v[w - 1] = 0x7f;
                v
            }
            (Extreme::SignedMin, w) => {
                let mut v = vec![0; w];
                v[w - 1] = 0x80;
                v
            }
            (Extreme::FloatNan, 8) => f64::NAN.to_le_bytes().to_vec(),
            (Extreme::FloatNan, _) => f32::NAN.to_le_bytes()[..width.min(4)].to_vec(),
            (Extreme::FloatInfinity, 8) => f64::INFINITY.to_le_bytes().to_vec(),
            (Extreme::FloatInfinity, _) => f32::INFINITY.to_le_bytes()[..width.min(4)].to_vec(),
            (Extreme::FloatHuge, 8) => 1e300f64.to_le_bytes().to_vec(),
            (Extreme::FloatHuge, _) => f32::MAX.to_le_bytes()[..width.min(4)].to_vec(),
        };
        b.resize(width, 0);
        if big_endian {
            b.reverse();
        }
        b
    }
}

/// One change to a sample; positions are fractions of the current length ([`Index`]).
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    Delete {
        at: Index,
        len: usize,
    },
    Truncate {
        at: Index,
    },
    /// Bytes of the donor sample written over the sample (or inserted) at `at`.
    Splice {
        at: Index,
        from: Index,
        len: usize,
        insert: bool,
    },
    /// A numeric field (little- or big-endian) set to an extreme; `field` picks one of the
    /// format's known field offsets when it has any, else `at` is used.
    Extreme {
        field: Option<Index>,
        at: Index,
        width: usize,
        value: Extreme,
        big_endian: bool,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let extreme = prop_oneof![
        Just(Extreme::Zero),
        Just(Extreme::AllOnes),
        Just(Extreme::SignedMax),
        Just(Extreme::SignedMin),
        Just(Extreme::FloatNan),
        Just(Extreme::FloatInfinity),
        Just(Extreme::FloatHuge),
    ];
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<Index>(), any::<Index>(), 1usize..256, any::<bool>())
            .prop_map(|(at, from, len, insert)| Mutation::Splice { at, from, len, insert }),
        3 => (
            proptest::option::weighted(0.7, any::<Index>()),
            any::<Index>(),
            prop_oneof![Just(1usize), Just(2), Just(4), Just(8)],
            extreme,
            proptest::bool::weighted(0.2),
        )
            .prop_map(|(field, at, width, value, big_endian)| Mutation::Extreme {
                field,
                at,
                width,
                value,
                big_endian,
            }),
    ]
}

/// A sample, a donor for splicing, and the changes made to the sample.
#[derive(Debug, Clone)]
pub struct Case {
    pub sample: Index,
    pub donor: Index,
    pub mutations: Vec<Mutation>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<Index>(),
        any::<Index>(),
        proptest::collection::vec(mutation(), 1..5),
    )
        .prop_map(|(sample, donor, mutations)| Case {
            sample,
            donor,
            mutations,
        })
}

/// `sample` with `mutations` applied (splices taken from `donor`).
pub fn mutate(sample: &Sample, donor: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let fields = &sample.fields;
    let mut b = sample.bytes.clone();
    for m in mutations {
        let pos = |at: &Index, len: usize| if len == 0 { 0 } else { at.index(len) };
        match m {
            Mutation::FlipBit { at, bit } => {
                if !b.is_empty() {
                    let i = pos(at, b.len());
                    b[i] ^= 1 << bit;
                }
            }
            Mutation::Insert { at, bytes } => {
                let i = pos(at, b.len() + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete { at, len } => {
                let i = pos(at, b.len());
                let end = (i + len).min(b.len());
                b.drain(i..end);
            }
            Mutation::Truncate { at } => b.truncate(pos(at, b.len())),
            Mutation::Splice {
                at,
                from,
                len,
                insert,
            } => {
                let start = pos(from, donor.len());
                let piece = &donor[start..(start + len).min(donor.len())];
                let i = pos(at, b.len());
                if *insert {
                    b.splice(i..i, piece.iter().copied());
                } else {
                    let end = (i + piece.len()).min(b.len());
                    b.splice(i..end, piece.iter().copied());
                }
            }
            Mutation::Extreme {
                field,
                at,
                width,
                value,
                big_endian,
            } => {
                let i = match field {
                    Some(f) if !fields.is_empty() => fields[f.index(fields.len())],
                    _ => pos(at, b.len()),
                };
                let v = value.bytes(*width, *big_endian);
                let end = (i + v.len()).min(b.len());
                if i < end {
                    b[i..end].copy_from_slice(&v[..end - i]);
                }
            }
        }
    }
    b
}

/// Runs `check` (given the sample and its mutated bytes) on [`cases`] mutations of `samples`, from the entry point's fixed seed. `check`
/// returns `Err` for a broken rule (an empty error message, say); a panic is caught and counts
/// as a failure. The failing case is shrunk and printed (sample, donor, mutations), with the
/// rerun command.
pub fn fuzz(
    entry_point: &str,
    samples: &[Sample],
    check: impl Fn(&Sample, &[u8]) -> Result<(), String>,
) {
    assert!(!samples.is_empty(), "{entry_point}: no samples to mutate");
    let cases = cases();
    let config = Config {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed(entry_point)),
        max_shrink_iters: 2048,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let started = std::time::Instant::now();
    let failure = std::env::temp_dir().join(format!("{entry_point}-failure.bin"));
    let result = runner.run(&case(), |c| {
        let sample = &samples[c.sample.index(samples.len())];
        let donor = &samples[c.donor.index(samples.len())];
        let bytes = mutate(sample, &donor.bytes, &c.mutations);
        REFUSED_HERE.with(|r| r.set(0));
        let outcome = check(sample, &bytes);
        // A refused request fails the case even when the reader then gave an error: on a
        // machine with overcommit the request would have been granted and filled.
        let refused = REFUSED_HERE.with(|r| r.get());
        let outcome = match outcome {
            _ if refused > 0 => Err(format!(
                "asked for {refused} bytes at once (bound {ALLOCATION_BOUND}; refused)"
            )),
            other => other,
        };
        if outcome.is_err() {
            // The last failing case written is the shrunk one reported below.
            let _ = std::fs::write(&failure, &bytes);
        }
        outcome.map_err(|e| TestCaseError::fail(format!("{} mutated: {e}", sample.name)))
    });
    if let Err(e) = result {
        panic!(
            "fuzzing {entry_point} failed (rerun: cargo test --workspace -- {entry_point}; the \
             failing bytes are in {}): {e}",
            failure.display()
        );
    }
    eprintln!(
        "fuzz {entry_point}: {cases} cases over {} samples in {:.1?}",
        samples.len(),
        started.elapsed()
    );
}

/// `Ok` when `result` is a success or an error whose message says something.
pub fn refused_with_message<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().trim().is_empty() => Err("error with an empty message".into()),
        Err(_) => Ok(()),
    }
}

/// The folder `shared/<sub>` beside the checkout (found from the crate's folder upwards), or
/// `None` after a skip message. Under `CI=true` a missing folder fails the test.
pub fn shared(sub: &str) -> Option<PathBuf> {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let found = crate_dir
        .ancestors()
        .map(|a| a.join("shared").join(sub))
        .find(|p| p.is_dir());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("shared/{sub} is missing beside the repository; CI needs it for the fuzz tests");
        }
        eprintln!("SKIP: shared/{sub} not found beside the repository");
    }
    found
}

/// A fresh scratch folder for one entry point's files, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(entry_point: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "dinoadapt-fuzz-{entry_point}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes `bytes` to `name` in the folder and gives its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Offsets in a DICOM file of the length and value of the elements a reader trusts for sizes:
/// rows, columns, samples, bits, frames, total pixel matrix, pixel data, group lengths.
pub fn dicom_fields(bytes: &[u8]) -> Vec<usize> {
    const TAGS: &[[u8; 4]] = &[
        [0x02, 0x00, 0x00, 0x00], // (0002,0000) file meta group length
        [0x28, 0x00, 0x02, 0x00], // samples per pixel
        [0x28, 0x00, 0x06, 0x00], // planar configuration
        [0x28, 0x00, 0x08, 0x00], // number of frames
        [0x28, 0x00, 0x10, 0x00], // rows
        [0x28, 0x00, 0x11, 0x00], // columns
        [0x28, 0x00, 0x00, 0x01], // bits allocated
        [0x28, 0x00, 0x01, 0x01], // bits stored
        [0x28, 0x00, 0x02, 0x01], // high bit
        [0x28, 0x00, 0x03, 0x01], // pixel representation
        [0x48, 0x00, 0x06, 0x00], // total pixel matrix columns
        [0x48, 0x00, 0x07, 0x00], // total pixel matrix rows
        [0xe0, 0x7f, 0x10, 0x00], // pixel data
        [0xfe, 0xff, 0x00, 0xe0], // item (sequences, fragments)
    ];
    let mut fields = Vec::new();
    for tag in TAGS {
        for (at, w) in bytes.windows(4).enumerate() {
            if w == tag {
                fields.extend([at + 4, at + 6, at + 8]);
            }
        }
    }
    fields.retain(|&f| f < bytes.len());
    fields
}
