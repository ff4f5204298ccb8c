//! VMSAv8-64 table walks, 4 KiB granule (Arm ARM D8).

use super::*;

impl Model {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn walk(
        &self,
        root: u64,
        start_level: u8,
        input_bits: u32,
        out_bits: u8,
        va: u64,
        stage2: bool,
        affd: bool,
        mair: u64,
        table_ipa: Option<&S2Cfg>,
    ) -> Result<Leaf, FaultKind> {
        if va >> input_bits != 0 {
            return Err(FaultKind::Translation);
        }
        let mut table = root;
        let mut level = start_level;
        loop {
            let shift = 12 + 9 * (3 - u32::from(level));
            let idx_bits = if level == start_level { input_bits - shift } else { 9 };
            let idx = (va >> shift) & ((1u64 << idx_bits) - 1);
            let mut desc_addr = table + idx * 8;
            if let Some(s2) = table_ipa {
                // Nested: stage-1 table addresses are IPAs.
                let l = self.walk_s2(s2, desc_addr, Access::READ).map_err(|_| FaultKind::Translation)?;
                desc_addr = l.oa | (desc_addr & (l.size - 1));
            }
            let desc = self.dev_read64(desc_addr).ok_or(FaultKind::WalkEabt)?;
            if desc & 1 == 0 {
                return Err(FaultKind::Translation);
            }
            let is_table_or_page = desc & 2 != 0;
            if level < 3 && is_table_or_page {
                let next = desc & ADDR_47_12;
                if next >> out_bits != 0 {
                    return Err(FaultKind::AddrSize);
                }
                table = next;
                level += 1;
                continue;
            }
            if level == 3 && !is_table_or_page {
                return Err(FaultKind::Translation);
            }
            if level == 0 {
                // No level-0 blocks with 4 KiB granule (without LPA2).
                return Err(FaultKind::Translation);
            }
            let size = 1u64 << shift;
            let oa = desc & ADDR_47_12 & !(size - 1);
            if oa >> out_bits != 0 {
                return Err(FaultKind::AddrSize);
            }
            if desc & (1 << 10) == 0 && !affd {
                return Err(FaultKind::Access);
            }
            return Ok(if stage2 {
                // S2AP [7:6]: bit 6 read, bit 7 write. MemAttr [5:2]:
                // 0b00xx = Device.
                let s2ap = bits(desc, 6, 2);
                Leaf { va: va & !(size - 1), size, oa, read: s2ap & 1 != 0, write: s2ap & 2 != 0, unpriv: true, device: bits(desc, 4, 2) == 0, global: true }
            } else {
                // AP[2:1] [7:6]: AP[2] read-only, AP[1] EL0 (unprivileged).
                let ap = bits(desc, 6, 2);
                let attr = bits(desc, 2, 3);
                let mair_byte = (mair >> (8 * attr)) & 0xff;
                Leaf {
                    va: va & !(size - 1),
                    size,
                    oa,
                    read: true,
                    write: ap & 2 == 0,
                    unpriv: ap & 1 != 0,
                    device: mair_byte & 0xf0 == 0,
                    global: desc & (1 << 11) == 0,
                }
            });
        }
    }

    pub(super) fn walk_s2(&self, s2: &S2Cfg, ipa: u64, _access: Access) -> Result<Leaf, FaultKind> {
        self.walk(s2.ttb, s2.start_level, 64 - u32::from(s2.t0sz), s2.out_bits, ipa, true, s2.affd, 0, None)
    }

    pub(super) fn s1_start(t0sz: u8) -> (u8, u32) {
        let input_bits = 64 - u32::from(t0sz);
        let level = if input_bits > 39 {
            0
        } else if input_bits > 30 {
            1
        } else {
            2
        };
        (level, input_bits)
    }

    pub(super) fn check_perm(leaf: &Leaf, access: Access) -> bool {
        (!access.write || leaf.write) && (access.write || leaf.read) && (access.privileged || leaf.unpriv)
    }
}
