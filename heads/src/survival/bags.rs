//! A cohort's feature bags: held on the host, or read from their files each time a bag is used
//! (a cohort's bags need not fit in memory: a thousand slides of 10k UNI tiles are 40 GB).
//! Training and prediction walk the bags in a known order; [`BagSet::stream`] reads the next
//! bags on a background thread while the head works on the current one.

use std::borrow::Cow;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::SurvivalError;

/// Reads the features of bag `i`, row-major [tiles, dim], each time they are needed.
pub trait BagReader: Send + Sync {
    fn read(&self, i: usize) -> Result<Vec<f32>, String>;
}

/// Where the features of the bags are.
#[derive(Clone)]
pub enum Bags {
    /// Row-major [tiles, dim] per bag, on the host.
    Host(Vec<Vec<f32>>),
    /// Read on use: the tiles of each bag (known beforehand, e.g. from file headers) and the
    /// reader.
    Files {
        tiles: Vec<usize>,
        reader: Arc<dyn BagReader>,
    },
}

impl Default for Bags {
    fn default() -> Self {
        Bags::Host(Vec::new())
    }
}

impl std::fmt::Debug for Bags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bags::Host(b) => write!(f, "Bags::Host({} bags)", b.len()),
            Bags::Files { tiles, .. } => write!(f, "Bags::Files({} bags)", tiles.len()),
        }
    }
}

/// A cohort's bags, all of one feature dimension, with each slide's covariates.
#[derive(Debug, Clone, Default)]
pub struct BagSet {
    pub dim: usize,
    pub bags: Bags,
    /// Per bag: the slide's covariates (all the same length; empty when there are none).
    pub covariates: Vec<Vec<f32>>,
}

/// Bags read ahead of use, in a given order.
const READ_AHEAD: usize = 2;

impl BagSet {
    /// Bags held on the host.
    pub fn on_host(dim: usize, bags: Vec<Vec<f32>>, covariates: Vec<Vec<f32>>) -> Self {
        BagSet {
            dim,
            bags: Bags::Host(bags),
            covariates,
        }
    }

    pub fn len(&self) -> usize {
        match &self.bags {
            Bags::Host(b) => b.len(),
            Bags::Files { tiles, .. } => tiles.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn tiles(&self, i: usize) -> usize {
        match &self.bags {
            Bags::Host(b) => b[i].len() / self.dim.max(1),
            Bags::Files { tiles, .. } => tiles[i],
        }
    }

    pub fn n_covariates(&self) -> usize {
        self.covariates.first().map_or(0, Vec::len)
    }

    /// Every bag has tiles of the set's dimension and the same number of covariates.
    pub fn check(&self) -> Result<(), SurvivalError> {
        if self.is_empty() {
            return Err(SurvivalError::Empty);
        }
        let c = self.n_covariates();
        for i in 0..self.len() {
            match &self.bags {
                Bags::Host(b) => check_values(i, b[i].len(), self.dim)?,
                Bags::Files { tiles, .. } if tiles[i] == 0 => {
                    return Err(SurvivalError::EmptyBag(i))
                }
                Bags::Files { .. } => {}
            }
            if self.covariates.get(i).map_or(0, Vec::len) != c {
                return Err(SurvivalError::Config(format!(
                    "bag {i} has {} covariates, bag 0 has {c}",
                    self.covariates.get(i).map_or(0, Vec::len)
                )));
            }
        }
        Ok(())
    }

    /// The features of bag `i`: borrowed from the host, or read and checked against the
    /// bag's tiles and the set's dimension.
    pub fn features(&self, i: usize) -> Result<Cow<'_, [f32]>, SurvivalError> {
        match &self.bags {
            Bags::Host(b) => Ok(Cow::Borrowed(&b[i])),
            Bags::Files { tiles, reader } => {
                let values = reader
                    .read(i)
                    .map_err(|e| SurvivalError::Config(format!("bag {i}: {e}")))?;
                if values.len() != tiles[i] * self.dim {
                    return Err(SurvivalError::Config(format!(
                        "bag {i}: read {} values, its header says {} tiles of dimension {}",
                        values.len(),
                        tiles[i],
                        self.dim
                    )));
                }
                Ok(Cow::Owned(values))
            }
        }
    }

    /// Run `f` over the bags `order`, in that order, each as a [tiles, dim] tensor on `device`
    /// with its covariates. Bags on files are read up to [`READ_AHEAD`] ahead on another
    /// thread, so reading overlaps the work on the current bag; at most that many are in
    /// memory at once. Stops at the first error (a read failure or one of `f`).
    pub fn stream<B: Backend>(
        &self,
        order: &[usize],
        device: &B::Device,
        mut f: impl FnMut(usize, Tensor<B, 2>, Option<Tensor<B, 1>>) -> Result<(), SurvivalError>,
    ) -> Result<(), SurvivalError> {
        let mut visit = |i: usize, values: Cow<'_, [f32]>| {
            let bag = Tensor::from_data(
                TensorData::new(values.into_owned(), [self.tiles(i), self.dim]),
                device,
            );
            let cov = self
                .covariates
                .get(i)
                .filter(|c| !c.is_empty())
                .map(|c| Tensor::from_data(TensorData::new(c.clone(), [c.len()]), device));
            f(i, bag, cov)
        };
        if matches!(self.bags, Bags::Host(_)) {
            for &i in order {
                visit(i, self.features(i)?)?;
            }
            return Ok(());
        }
        std::thread::scope(|scope| {
            let (send, receive) = sync_channel(READ_AHEAD);
            scope.spawn(move || {
                for &i in order {
                    let read = self.features(i).map(Cow::into_owned);
                    let failed = read.is_err();
                    if send.send((i, read)).is_err() || failed {
                        break;
                    }
                }
            });
            drain(receive, |i, values| visit(i, Cow::Owned(values)))
        })
    }
}

/// Receive read bags until the reader is done, the first error, or `f` fails (dropping the
/// receiver then stops the reader).
fn drain(
    receive: Receiver<(usize, Result<Vec<f32>, SurvivalError>)>,
    mut f: impl FnMut(usize, Vec<f32>) -> Result<(), SurvivalError>,
) -> Result<(), SurvivalError> {
    for (i, read) in receive {
        f(i, read?)?;
    }
    Ok(())
}

fn check_values(i: usize, len: usize, dim: usize) -> Result<(), SurvivalError> {
    if len == 0 {
        return Err(SurvivalError::EmptyBag(i));
    }
    if dim == 0 || !len.is_multiple_of(dim) {
        return Err(SurvivalError::Dimension {
            index: i,
            expected: dim,
            found: len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Bag `i` is `tiles[i]` rows of the value `i`; counts reads.
    struct Counting {
        tiles: Vec<usize>,
        dim: usize,
        reads: AtomicUsize,
        fail_at: Option<usize>,
    }

    impl BagReader for Counting {
        fn read(&self, i: usize) -> Result<Vec<f32>, String> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.fail_at == Some(i) {
                return Err("unreadable".into());
            }
            Ok(vec![i as f32; self.tiles[i] * self.dim])
        }
    }

    fn on_files(fail_at: Option<usize>) -> (BagSet, Arc<Counting>) {
        let reader = Arc::new(Counting {
            tiles: vec![3, 1, 4, 2],
            dim: 2,
            reads: AtomicUsize::new(0),
            fail_at,
        });
        let set = BagSet {
            dim: 2,
            bags: Bags::Files {
                tiles: reader.tiles.clone(),
                reader: reader.clone(),
            },
            covariates: vec![vec![0.5]; 4],
        };
        (set, reader)
    }

    #[test]
    fn bags_on_files_stream_in_order_and_match_the_host_copy() {
        let (files, reader) = on_files(None);
        let host = BagSet::on_host(
            2,
            (0..4)
                .map(|i| files.features(i).unwrap().into_owned())
                .collect(),
            vec![vec![0.5]; 4],
        );
        let order = [2, 0, 3, 1, 2];
        let seen = |set: &BagSet| {
            let mut seen = Vec::new();
            set.stream::<Flex>(&order, &Default::default(), |i, bag, cov| {
                let values: Vec<f32> = bag.clone().into_data().into_vec().unwrap();
                assert!(values.iter().all(|&v| v == i as f32));
                assert_eq!(cov.unwrap().dims(), [1]);
                seen.push((i, bag.dims()));
                Ok(())
            })
            .unwrap();
            seen
        };
        assert_eq!(seen(&files), seen(&host));
        assert_eq!(seen(&files)[0], (2, [4, 2]));
        files.check().unwrap();
        assert_eq!(reader.reads.load(Ordering::SeqCst), 4 + 2 * order.len());
    }

    #[test]
    fn a_failed_read_or_callback_stops_the_stream() {
        let (files, _) = on_files(Some(3));
        let mut seen = Vec::new();
        let err = files
            .stream::<Flex>(&[0, 3, 1], &Default::default(), |i, _, _| {
                seen.push(i);
                Ok(())
            })
            .unwrap_err();
        assert_eq!(seen, vec![0]);
        assert!(err.to_string().contains("bag 3: unreadable"), "{err}");

        let (files, reader) = on_files(None);
        let order: Vec<usize> = (0..4).cycle().take(40).collect();
        let err = files
            .stream::<Flex>(&order, &Default::default(), |_, _, _| {
                Err(SurvivalError::Config("stop".into()))
            })
            .unwrap_err();
        assert_eq!(err, SurvivalError::Config("stop".into()));
        let reads = reader.reads.load(Ordering::SeqCst);
        assert!(
            reads <= 2 + READ_AHEAD,
            "{reads} reads after the first bag failed"
        );
    }

    #[test]
    fn a_bag_whose_read_disagrees_with_its_header_is_refused() {
        let reader = Arc::new(Counting {
            tiles: vec![3],
            dim: 2,
            reads: AtomicUsize::new(0),
            fail_at: None,
        });
        let set = BagSet {
            dim: 2,
            bags: Bags::Files {
                tiles: vec![5],
                reader,
            },
            covariates: Vec::new(),
        };
        let err = set.features(0).unwrap_err().to_string();
        assert!(
            err.contains("read 6 values, its header says 5 tiles"),
            "{err}"
        );
    }
}
