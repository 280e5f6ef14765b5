//! Mergeable statistics: every accumulator here has `merge`, and merging is associative and
//! commutative, exactly for the exact statistics and within the sketches' bounds for the others.

pub mod frequent;
pub mod kll;
pub mod moments;
pub mod quantiles;
pub mod values;

pub use moments::{Moments, NeumaierSum};
pub use quantiles::{ExactQuantiles, Quantiles};
pub use values::{TopValue, ValueKey, ValueSummary, Values};
