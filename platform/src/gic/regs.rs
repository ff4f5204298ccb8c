//! The GICv3 register blocks and fields (Arm IHI 0069, chapter 12): the
//! distributor's frame, a redistributor's RD_base and SGI_base frames.

use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    /// GICD_CTLR (§12.9.4). Named as in the one-Security-state view (DS=1);
    /// bits 1 and 4 are EnableGrp1A and ARE_NS in the Non-secure view of a
    /// GIC with two Security states — the same meaning for the kernel.
    pub GICD_CTLR [
        /// Enable Group 0 interrupts (DS=1 view; unused by the kernel).
        EnableGrp0 OFFSET(0) NUMBITS(1) [],
        /// Enable Group 1 interrupts (EnableGrp1A in the Non-secure view).
        EnableGrp1 OFFSET(1) NUMBITS(1) [],
        /// Affinity routing enable (ARE_NS in the Non-secure view).
        ARE OFFSET(4) NUMBITS(1) [],
        /// Disable Security: 1 = one Security state.
        DS OFFSET(6) NUMBITS(1) [],
        /// Register Write Pending: a CTLR or ICENABLER write still propagates.
        RWP OFFSET(31) NUMBITS(1) []
    ],
    /// GICD_TYPER (§12.9.38).
    pub GICD_TYPER [
        /// SPIs: the largest SPI INTID is 32 × (ITLinesNumber + 1) − 1.
        ITLinesNumber OFFSET(0) NUMBITS(5) [],
        /// Extended SPI range implemented.
        ESPI OFFSET(8) NUMBITS(1) [],
        /// Two Security states are supported.
        SecurityExtn OFFSET(10) NUMBITS(1) [],
        /// LPIs supported.
        LPIS OFFSET(17) NUMBITS(1) [],
        /// INTID bits supported, minus one.
        IDbits OFFSET(19) NUMBITS(5) []
    ],
    /// GICD_PIDR2 / GICR_PIDR2 (§12.1.3): which architecture version.
    pub PIDR2 [
        /// 0x3 = GICv3, 0x4 = GICv4.
        ArchRev OFFSET(4) NUMBITS(4) []
    ],
    /// GICR_CTLR (§12.11.2).
    pub GICR_CTLR [
        /// LPIs enabled (the kernel uses none).
        EnableLPIs OFFSET(0) NUMBITS(1) [],
        /// Register Write Pending for GICR_ICENABLER0 writes.
        RWP OFFSET(3) NUMBITS(1) [],
        /// Upstream Write Pending.
        UWP OFFSET(31) NUMBITS(1) []
    ],
    /// GICR_WAKER (§12.11.39): power management of the redistributor's CPU
    /// interface.
    pub GICR_WAKER [
        /// 1 = the CPU is asleep: the redistributor does not forward.
        ProcessorSleep OFFSET(1) NUMBITS(1) [],
        /// 1 = the interface to the CPU is quiescent (asleep).
        ChildrenAsleep OFFSET(2) NUMBITS(1) []
    ]
}

register_bitfields! {u64,
    /// `GICD_IROUTER<n>` (§12.9.22): where SPI n goes with affinity routing.
    pub GICD_IROUTER [
        /// Affinity level 0 of the target PE.
        Aff0 OFFSET(0) NUMBITS(8) [],
        /// Affinity level 1.
        Aff1 OFFSET(8) NUMBITS(8) [],
        /// Affinity level 2.
        Aff2 OFFSET(16) NUMBITS(8) [],
        /// 0 = to the PE named by the affinity; 1 = to any participating PE.
        Interrupt_Routing_Mode OFFSET(31) NUMBITS(1) [],
        /// Affinity level 3.
        Aff3 OFFSET(32) NUMBITS(8) []
    ],
    /// GICR_TYPER (§12.11.37).
    pub GICR_TYPER [
        /// Physical LPIs supported.
        PLPIS OFFSET(0) NUMBITS(1) [],
        /// Virtual LPIs supported: the redistributor has four frames.
        VLPIS OFFSET(1) NUMBITS(1) [],
        /// The last redistributor of a contiguous region.
        Last OFFSET(4) NUMBITS(1) [],
        /// A unique number for the PE (ITS target, not the MPIDR).
        Processor_Number OFFSET(8) NUMBITS(16) [],
        /// Aff3.Aff2.Aff1.Aff0 of the PE this redistributor serves.
        Affinity_Value OFFSET(32) NUMBITS(32) []
    ]
}

register_structs! {
    #[allow(non_snake_case)] // field names are the spec's register names
    /// The distributor's frame (GICD_*, §12.9, table 12-25), SPIs only:
    /// with affinity routing the SGI/PPI copies of these registers are in
    /// each redistributor's SGI_base frame.
    pub GicdRegisters {
        (0x0000 => pub CTLR: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => pub TYPER: ReadOnly<u32, GICD_TYPER::Register>),
        (0x0008 => pub IIDR: ReadOnly<u32>),
        (0x000c => _reserved0),
        /// `GICD_IGROUPR<n>`: 1 = Group 1 (with IGRPMODR 0: Non-secure).
        (0x0080 => pub IGROUPR: [ReadWrite<u32>; 32]),
        /// `GICD_ISENABLER<n>`: write 1 to enable forwarding.
        (0x0100 => pub ISENABLER: [ReadWrite<u32>; 32]),
        /// `GICD_ICENABLER<n>`: write 1 to disable forwarding.
        (0x0180 => pub ICENABLER: [ReadWrite<u32>; 32]),
        /// `GICD_ISPENDR<n>`: write 1 to make pending.
        (0x0200 => pub ISPENDR: [ReadWrite<u32>; 32]),
        /// `GICD_ICPENDR<n>`: write 1 to clear pending.
        (0x0280 => pub ICPENDR: [ReadWrite<u32>; 32]),
        /// `GICD_ISACTIVER<n>`.
        (0x0300 => pub ISACTIVER: [ReadWrite<u32>; 32]),
        /// `GICD_ICACTIVER<n>`: write 1 to deactivate.
        (0x0380 => pub ICACTIVER: [ReadWrite<u32>; 32]),
        /// `GICD_IPRIORITYR<n>`: one priority byte per INTID (0..=1019).
        (0x0400 => pub IPRIORITYR: [ReadWrite<u32>; 255]),
        (0x07fc => _reserved1),
        /// `GICD_ICFGR<n>`: two bits per INTID, Int_config\[1\] = edge.
        (0x0c00 => pub ICFGR: [ReadWrite<u32>; 64]),
        /// `GICD_IGRPMODR<n>` (with two Security states: Secure Group 1).
        (0x0d00 => pub IGRPMODR: [ReadWrite<u32>; 32]),
        (0x0d80 => _reserved2),
        /// `GICD_IROUTER<n>` for n = 32..=1019 (index n − 32).
        (0x6100 => pub IROUTER: [ReadWrite<u64, GICD_IROUTER::Register>; 988]),
        (0x7fe0 => _reserved3),
        (0xffe8 => pub PIDR2: ReadOnly<u32, PIDR2::Register>),
        (0xffec => _reserved4),
        (0x10000 => @END),
    }
}

register_structs! {
    #[allow(non_snake_case)]
    /// A redistributor's RD_base frame (§12.10, table 12-27).
    pub GicrRdRegisters {
        (0x0000 => pub CTLR: ReadWrite<u32, GICR_CTLR::Register>),
        (0x0004 => pub IIDR: ReadOnly<u32>),
        (0x0008 => pub TYPER: ReadOnly<u64, GICR_TYPER::Register>),
        (0x0010 => pub STATUSR: ReadWrite<u32>),
        (0x0014 => pub WAKER: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0018 => _reserved0),
        (0xffe8 => pub PIDR2: ReadOnly<u32, PIDR2::Register>),
        (0xffec => _reserved1),
        (0x10000 => @END),
    }
}

register_structs! {
    #[allow(non_snake_case)]
    /// A redistributor's SGI_base frame (§12.10, table 12-29): the SGI and
    /// PPI (INTIDs 0..=31) copies of the distributor's per-INTID registers.
    pub GicrSgiRegisters {
        (0x0000 => _reserved0),
        (0x0080 => pub IGROUPR0: ReadWrite<u32>),
        (0x0084 => _reserved1),
        (0x0100 => pub ISENABLER0: ReadWrite<u32>),
        (0x0104 => _reserved2),
        (0x0180 => pub ICENABLER0: ReadWrite<u32>),
        (0x0184 => _reserved3),
        (0x0200 => pub ISPENDR0: ReadWrite<u32>),
        (0x0204 => _reserved4),
        (0x0280 => pub ICPENDR0: ReadWrite<u32>),
        (0x0284 => _reserved5),
        (0x0300 => pub ISACTIVER0: ReadWrite<u32>),
        (0x0304 => _reserved6),
        (0x0380 => pub ICACTIVER0: ReadWrite<u32>),
        (0x0384 => _reserved7),
        /// `GICR_IPRIORITYR<n>`, n = 0..=7.
        (0x0400 => pub IPRIORITYR: [ReadWrite<u32>; 8]),
        (0x0420 => _reserved8),
        /// GICR_ICFGR0 (SGIs, read-only edge) and GICR_ICFGR1 (PPIs).
        (0x0c00 => pub ICFGR: [ReadWrite<u32>; 2]),
        (0x0c08 => _reserved9),
        (0x0d00 => pub IGRPMODR0: ReadWrite<u32>),
        (0x0d04 => _reserved10),
        (0x10000 => @END),
    }
}
