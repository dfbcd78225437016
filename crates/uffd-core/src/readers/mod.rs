//! The ways of reading the fd (see `reading.rs` for the words): they differ only in when they take
//! a turn, and share the turn and the step after it (`turn.rs`).

pub mod intake;
pub mod loop_thread;
pub mod puller;
pub mod pump;
pub mod turn;
