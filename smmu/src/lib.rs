//! Arm SMMUv3 driver. Knows nothing of partitions or device trees.
#![no_std]
