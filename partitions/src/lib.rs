//! The separation policy: decides, touches no register.
#![no_std]
#![forbid(unsafe_code)]
