//! The pipeline's stages, in the order an event passes them.

pub(crate) mod filter;
pub(crate) mod guild;
pub(crate) mod inbox;
pub(crate) mod writer;
