//! Progress of long work, reported to whoever drives it (the program draws a bar; a library
//! caller may log or ignore it).

/// Receives the progress of one piece of work.
pub trait Progress: Send {
    /// The work has `total` units (`unit`: "regions", "images", ...).
    fn start(&mut self, total: usize, unit: &str);
    /// `done` units are finished.
    fn set(&mut self, done: usize);
    /// The work ended (done or failed).
    fn finish(&mut self);
}

/// Progress nobody watches.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _: usize, _: &str) {}
    fn set(&mut self, _: usize) {}
    fn finish(&mut self) {}
}
