//! Where replica counts go. One trait, one file per implementation.
