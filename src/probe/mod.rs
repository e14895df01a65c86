//! Analyses on top of a forward pass. The network offers one hook, [`crate::intr::Intr::last_layer_logits`]
//! (the last decoder layer run again with some heads attending evenly); the loops over heads and
//! the statistics of maps and the out-of-domain score live here.

pub mod evening;
pub mod ood;
pub mod stats;

pub use evening::{evened_logits, forward_evening_heads};
pub use ood::{OutOfDomain, out_of_domain};
