//! The truthound profiling engine: dataset access, partition planning, the one-pass kernel,
//! mergeable sketches, merge, and the profile format. No Kubernetes here.
//!
//! A profile run is: [`dataset::discover`] the files, [`plan::plan`] tasks over them,
//! [`run::run_task`] each task into a [`partial::PartialProfile`], merge the partials, and
//! [`profile::TableProfile::from_partial`] the result.

pub mod cache;
pub mod dataset;
pub mod drift;
pub mod error;
pub mod events;
pub mod kernel;
pub mod limits;
pub mod merge;
pub mod options;
pub mod partial;
pub mod patterns;
pub mod plan;
pub mod profile;
pub mod run;
pub mod sample;
pub mod stats;

pub use error::{Error, ErrorClass, Result};
pub use options::{ProfileOptions, Sampling};
pub use partial::PartialProfile;
pub use plan::{Plan, PlanRequest, SampleRows, Strategy};
pub use profile::TableProfile;
