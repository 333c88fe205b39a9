//! The `ShiftPolicy`: types, loading from YAML, validation, the event calendar and the CRD.

pub mod crd;
pub mod events;
pub mod load;
mod locate;
mod prescan;
mod scan;
pub mod spec;
pub mod units;
pub mod validate;

pub use crd::crd_yaml;
pub use events::EventWindow;
pub use load::{PolicyError, load_bytes, load_file, load_str, parse_str};
pub use spec::*;
pub use units::{Cpu, Memory, PolicyDuration};
pub use validate::{FieldError, validate};
