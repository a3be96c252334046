//! The Lotus domain model: products, thing models, devices, topics and the permission
//! interface. Nothing here performs I/O, so every other host crate can depend on it and it can be
//! tested and benchmarked in isolation.

pub mod alink;
pub mod authz;
pub mod mask;
pub mod product;
pub mod scope;
pub mod thing_model;
pub mod topic;
