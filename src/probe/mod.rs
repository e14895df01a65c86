//! Analyses on top of a forward pass. The network offers two hooks: [`crate::intr::Intr::last_layer_logits`]
//! (the last decoder layer run again with some heads attending evenly) and
//! [`crate::intr::Intr::class_query`] (the same for one class's query alone). The loops over heads
//! (evening each, ranking them greedily), the statistics of maps and the out-of-domain score live here.

pub mod evening;
pub mod ood;
pub mod ranking;
pub mod stats;

pub use evening::{evened_logits, forward_evening_heads, forward_evening_heads_keeping};
pub use ood::{OutOfDomain, out_of_domain};
pub use ranking::{HeadRanking, RankedHead, rank_heads};
