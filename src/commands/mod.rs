pub mod bench;
pub mod bench_train;
pub mod embed;
pub mod export;
pub mod inspect;
pub mod parity;
pub mod pretrain;
