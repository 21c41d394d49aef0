//! Evaluations of frozen features that training runs monitor (the heads crate builds the full
//! probes on top).

pub mod knn;

pub use knn::{knn_accuracy, knn_predict};
