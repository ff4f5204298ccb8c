//! The hypercall ABI partitions use, and its argument checks.
//!
//! A partition calls `hvc #0` with the function number in x0 and arguments
//! in x1..x4. On return x0 holds a status (0 = success, a negative
//! [`Status`] otherwise) and x1..x3 any results. Arguments are checked
//! before anything happens: a bad call changes nothing.

use crate::binding::Region;
use devicetree::PhysAddr;

/// ABI version returned by [`VERSION`]: major << 16 | minor.
pub const ABI_VERSION: u64 = 1 << 16;

/// `VERSION() -> x1 = ABI_VERSION`.
pub const VERSION: u64 = 0x00;
/// `CONSOLE_WRITE(ipa, len)`: print `len` (≤ [`CONSOLE_MAX`]) bytes of the
/// caller's memory at `ipa` as one line prefixed by the partition's name.
pub const CONSOLE_WRITE: u64 = 0x01;
/// `EXIT(status)`: the partition stops; 0 means success. Does not return.
pub const EXIT: u64 = 0x02;
/// `WHOAMI() -> x1 = partition id, x2 = CPUs, x3 = devices`.
pub const WHOAMI: u64 = 0x03;

/// `GROUP_COUNT() -> x1 = number of isolation groups`.
pub const GROUP_COUNT: u64 = 0x10;
/// `GROUP_INFO(group) -> x1 = owner ([`OWNER_BLOCKED`], [`OWNER_MOVING`] or
/// a partition id), x2 = devices << 32 | StreamIDs, x3 = requester ID of
/// its first PCI device (0xffff: none) << 32 | first StreamID`.
pub const GROUP_INFO: u64 = 0x11;
/// `GROUP_RELEASE(group, expected owner)`: Assigned(expected) → Blocked.
/// A partition may release its own groups; a manager any group.
pub const GROUP_RELEASE: u64 = 0x12;
/// `GROUP_ASSIGN(group, partition, expected owner = OWNER_BLOCKED)`:
/// Blocked → Assigned(partition). Managers only.
pub const GROUP_ASSIGN: u64 = 0x13;
/// `DEVICES() -> x1 = generation (changes whenever the caller's devices
/// change), x2 = how many, x3 = BAR 0 of the first`.
pub const DEVICES: u64 = 0x14;
/// Owner value of a Blocked group.
pub const OWNER_BLOCKED: u64 = u64::MAX;
/// Owner value of a group being moved.
pub const OWNER_MOVING: u64 = u64::MAX - 1;

/// Longest console write.
pub const CONSOLE_MAX: u64 = 256;

/// Hypercall status codes (returned in x0 as a negative number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// Unknown function number.
    NotSupported = -1,
    /// An argument is out of range (length, id, flags).
    InvalidArgument = -2,
    /// The caller may not do this.
    Denied = -3,
    /// A buffer is not inside the caller's memory.
    BadAddress = -4,
    /// The group's owner is not the one the call expected.
    OwnerMismatch = -5,
    /// Another change of the group is in progress.
    Busy = -6,
    /// The change failed part-way; the group is Blocked.
    Failed = -7,
}

impl Status {
    /// The x0 encoding.
    pub const fn code(self) -> u64 {
        self as i64 as u64
    }
}

/// A decoded, checked call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// [`VERSION`].
    Version,
    /// [`CONSOLE_WRITE`] of a buffer already checked to lie in the caller's
    /// memory (IPA == PA).
    ConsoleWrite {
        /// Physical address of the text.
        at: PhysAddr,
        /// Bytes.
        len: u64,
    },
    /// [`EXIT`].
    Exit {
        /// Status the partition reports.
        status: u64,
    },
    /// [`WHOAMI`].
    WhoAmI,
    /// [`GROUP_COUNT`].
    GroupCount,
    /// [`GROUP_INFO`].
    GroupInfo {
        /// Group id.
        group: u32,
    },
    /// [`GROUP_RELEASE`].
    GroupRelease {
        /// Group id.
        group: u32,
        /// The owner the caller expects to replace.
        expected: u16,
    },
    /// [`GROUP_ASSIGN`].
    GroupAssign {
        /// Group id.
        group: u32,
        /// New owner.
        to: u16,
    },
    /// [`DEVICES`].
    Devices,
}

fn group_arg(v: u64) -> Result<u32, Status> {
    u32::try_from(v).map_err(|_| Status::InvalidArgument)
}

fn partition_arg(v: u64) -> Result<u16, Status> {
    u16::try_from(v).map_err(|_| Status::InvalidArgument)
}

/// Checks that `[ipa, ipa + len)` lies inside one of `memory`'s regions.
pub fn check_buffer(memory: &[Region], ipa: u64, len: u64) -> Result<PhysAddr, Status> {
    let end = ipa.checked_add(len).ok_or(Status::BadAddress)?;
    let inside = memory.iter().any(|r| ipa >= r.base.0 && end <= r.end());
    if inside {
        Ok(PhysAddr(ipa))
    } else {
        Err(Status::BadAddress)
    }
}

/// Decodes registers x0..x4 of a caller owning `memory`.
pub fn decode(x: [u64; 5], memory: &[Region]) -> Result<Call, Status> {
    match x[0] {
        VERSION => Ok(Call::Version),
        CONSOLE_WRITE => {
            if x[2] == 0 || x[2] > CONSOLE_MAX {
                return Err(Status::InvalidArgument);
            }
            Ok(Call::ConsoleWrite { at: check_buffer(memory, x[1], x[2])?, len: x[2] })
        }
        EXIT => Ok(Call::Exit { status: x[1] }),
        WHOAMI => Ok(Call::WhoAmI),
        GROUP_COUNT => Ok(Call::GroupCount),
        GROUP_INFO => Ok(Call::GroupInfo { group: group_arg(x[1])? }),
        GROUP_RELEASE => Ok(Call::GroupRelease { group: group_arg(x[1])?, expected: partition_arg(x[2])? }),
        GROUP_ASSIGN => {
            if x[3] != OWNER_BLOCKED {
                return Err(Status::OwnerMismatch);
            }
            Ok(Call::GroupAssign { group: group_arg(x[1])?, to: partition_arg(x[2])? })
        }
        DEVICES => Ok(Call::Devices),
        _ => Err(Status::NotSupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEM: [Region; 1] = [Region { base: PhysAddr(0x4800_0000), size: 0x1000 }];

    #[test]
    fn console_write_checks_the_buffer() {
        assert_eq!(decode([CONSOLE_WRITE, 0x4800_0ff0, 16, 0, 0], &MEM), Ok(Call::ConsoleWrite { at: PhysAddr(0x4800_0ff0), len: 16 }));
        assert_eq!(decode([CONSOLE_WRITE, 0x4800_0ff0, 17, 0, 0], &MEM), Err(Status::BadAddress));
        assert_eq!(decode([CONSOLE_WRITE, 0x4000_0000, 8, 0, 0], &MEM), Err(Status::BadAddress));
        assert_eq!(decode([CONSOLE_WRITE, u64::MAX - 2, 8, 0, 0], &MEM), Err(Status::BadAddress));
        assert_eq!(decode([CONSOLE_WRITE, 0x4800_0000, 0, 0, 0], &MEM), Err(Status::InvalidArgument));
        assert_eq!(decode([CONSOLE_WRITE, 0x4800_0000, 257, 0, 0], &MEM), Err(Status::InvalidArgument));
    }

    #[test]
    fn unknown_calls_are_refused() {
        assert_eq!(decode([0x99, 0, 0, 0, 0], &MEM), Err(Status::NotSupported));
        assert_eq!(Status::NotSupported.code(), u64::MAX);
        assert_eq!(decode([EXIT, 3, 0, 0, 0], &MEM), Ok(Call::Exit { status: 3 }));
        assert_eq!(decode([GROUP_RELEASE, 1 << 40, 0, 0, 0], &MEM), Err(Status::InvalidArgument));
        assert_eq!(decode([GROUP_ASSIGN, 1, 0, 3, 0], &MEM), Err(Status::OwnerMismatch), "assign expects Blocked");
        assert_eq!(decode([GROUP_ASSIGN, 1, 2, OWNER_BLOCKED, 0], &MEM), Ok(Call::GroupAssign { group: 1, to: 2 }));
    }
}
