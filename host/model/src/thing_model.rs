//! placeholder: the thing model (Alink TSL) is written in thing_model.rs
