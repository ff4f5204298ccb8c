//! Exit statuses: what QEMU (or a test harness) sees when the kernel stops.

/// Why the kernel stopped. The value is the process exit status under QEMU
/// semihosting; the harness maps it back to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Ran to completion.
    Success = 0,
    /// Entered at an exception level other than EL2.
    WrongExceptionLevel = 2,
    /// The device tree is missing or malformed.
    BadDeviceTree = 3,
    /// An unexpected exception was taken at EL2.
    Exception = 4,
    /// The platform cannot be set up (memory, console, MMU).
    PlatformError = 5,
    /// An SMMU could not be brought to a safe state.
    SmmuError = 6,
    /// The partition configuration was refused.
    ConfigRefused = 7,
    /// A partition failed.
    PartitionFailed = 8,
    /// A self-test the boot arguments asked for failed.
    SelfTestFailed = 9,
    /// A Rust panic (a kernel bug).
    Panic = 101,
}

impl defmt::Format for ExitCode {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=u8} ({=str})", *self as u8, self.name())
    }
}

impl ExitCode {
    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::WrongExceptionLevel => "wrong exception level",
            ExitCode::BadDeviceTree => "bad device tree",
            ExitCode::Exception => "unexpected exception",
            ExitCode::PlatformError => "platform error",
            ExitCode::SmmuError => "SMMU error",
            ExitCode::ConfigRefused => "configuration refused",
            ExitCode::PartitionFailed => "partition failed",
            ExitCode::SelfTestFailed => "self-test failed",
            ExitCode::Panic => "panic",
        }
    }
}
