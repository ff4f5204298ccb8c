//! The separation policy: decides, touches no register.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod binding;
pub mod budget;
pub mod faults;
pub mod groups;
pub mod guest_dt;
pub mod hypercall;
pub mod machine;
pub mod ownership;
pub mod topology;
pub mod validate;
pub mod vm;
