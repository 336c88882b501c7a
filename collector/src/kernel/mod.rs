//! Reading the running kernel: everything version-specific lives here and
//! comes out as plain values the loader hands to BPF.
pub mod btf_offsets;
pub mod layout;
pub mod map_batch;
pub mod netns;
pub mod tracefs;
