pub use rustygradients_core::*;
