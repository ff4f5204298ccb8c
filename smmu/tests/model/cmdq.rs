//! The command queue and what each command invalidates (ch. 4).

use super::*;

impl Model {
    pub(super) fn cmdq_halted(st: &State) -> bool {
        (st.regs.gerror ^ st.regs.gerrorn) & 1 != 0
    }

    pub(super) fn process_cmdq(&self, st: &mut State, max: u32) {
        if st.regs.cr0 & 0b1000 == 0 {
            return;
        }
        let log2 = bits(st.regs.cmdq_base, 0, 5) as u32;
        let base = st.regs.cmdq_base & ((1u64 << 52) - 1) & !0x1f;
        let mask = (1u32 << (log2 + 1)) - 1;
        let mut done = 0;
        while done < max {
            if Self::cmdq_halted(st) {
                return;
            }
            let prod = st.regs.cmdq_prod & mask;
            let cons = st.regs.cmdq_cons & mask;
            if prod == cons {
                return;
            }
            let idx = u64::from(cons & ((1 << log2) - 1));
            if st.knobs.abort_fetches > 0 {
                // CERROR_ABT: the fetch of this (valid) command aborted; it
                // did not run, CONS stays on it.
                st.knobs.abort_fetches -= 1;
                self.cmd_error(st, 2);
                return;
            }
            let (Some(w0), Some(w1)) = (self.dev_read64(base + idx * 16), self.dev_read64(base + idx * 16 + 8)) else {
                self.cmd_error(st, 2);
                return;
            };
            match self.execute(st, w0, w1) {
                Ok(()) => {
                    st.regs.cmdq_cons = (st.regs.cmdq_cons & !mask) | ((cons + 1) & mask);
                    // ERR is cleared once the queue moves on.
                    st.regs.cmdq_cons &= !(0x7f << 24);
                }
                Err(code) => {
                    self.cmd_error(st, code);
                    return;
                }
            }
            done += 1;
        }
    }

    pub(super) fn cmd_error(&self, st: &mut State, code: u32) {
        st.regs.cmdq_cons = (st.regs.cmdq_cons & !(0x7f << 24)) | (code << 24);
        if !Self::cmdq_halted(st) {
            st.regs.gerror ^= 1;
        }
    }

    pub(super) fn execute(&self, st: &mut State, w0: u64, w1: u64) -> Result<(), u32> {
        const ILL: u32 = 1;
        let op = bits(w0, 0, 8) as u8;
        st.opcodes.push(op);
        let s1p = Self::s1p(st);
        let s2p = Self::s2p(st);
        let sid = bits(w0, 32, 32) as u32;
        let vmid = bits(w0, 32, 16) as u16;
        let asid = bits(w0, 48, 16) as u16;
        let ril = bits(u64::from(st.idr[3]), 10, 1) == 1;
        let range_of = |addr: u64| -> (u64, u64) {
            // NUM [16:12], SCALE [24:20], TG [11:10] of word 1 (ch. 4).
            // Without IDR3.RIL these fields are RES0: one address only.
            let tg = bits(w1, 10, 2);
            if tg == 0 || !ril {
                (addr, 1)
            } else {
                let gran = match tg {
                    1 => 12,
                    2 => 14,
                    _ => 16,
                };
                let n = (bits(w0, 12, 5) + 1) << bits(w0, 20, 5);
                (addr, n << gran)
            }
        };
        match op {
            0x01 | 0x02 => {}
            0x03 => {
                if bits(w0, 10, 1) == 1 {
                    return Err(ILL);
                }
                // Leaf = 0 also drops the level-1 descriptor that locates
                // the STE; Leaf = 1 only the STE (§4.3.2).
                let leaf = bits(w1, 0, 1) == 1;
                self.cfgi(st, sid, sid, !leaf);
            }
            0x04 => {
                if bits(w0, 10, 1) == 1 {
                    return Err(ILL);
                }
                // CFGI_STE_RANGE (and CFGI_ALL) act as Leaf = 0 (§4.3.3).
                let range = bits(w1, 0, 5);
                let n = 1u64 << (range + 1);
                let start = u64::from(sid) & !(n - 1);
                self.cfgi(st, start as u32, (start + n - 1).min(u64::from(u32::MAX)) as u32, true);
            }
            0x05 | 0x06 => {
                // CFGI_CD / CFGI_CD_ALL: the cached CDs of the stream (only
                // SubstreamID 0 is modelled), and the STE-level cache entry
                // that embeds them.
                st.cd_cache.remove(&sid);
                st.cfg_cache.remove(&sid);
            }
            0x10 => {
                if !s1p {
                    return Err(ILL);
                }
                self.check_tlbi_after_cfgi(st, |t| matches!(t, TlbTag::S1 { vmid: v, .. } if !s2p || v == Some(vmid)));
                st.tlb.retain(|e| !matches!(e.tag, TlbTag::S1 { vmid: v, .. } if !s2p || v == Some(vmid)));
            }
            0x11 => {
                if !s1p {
                    return Err(ILL);
                }
                self.check_tlbi_after_cfgi(st, |t| matches!(t, TlbTag::S1 { vmid: v, asid: a } if (!s2p || v == Some(vmid)) && a == asid));
                // Global entries are not affected by TLBI by ASID.
                st.tlb.retain(|e| !matches!(e.tag, TlbTag::S1 { vmid: v, asid: a } if (!s2p || v == Some(vmid)) && a == asid && !e.leaf.global));
            }
            0x12 | 0x13 => {
                if !s1p {
                    return Err(ILL);
                }
                let all_asids = op == 0x13;
                let (addr, len) = range_of(w1 & !0xfff);
                st.tlb.retain(|e| {
                    let hit = matches!(e.tag, TlbTag::S1 { vmid: v, asid: a }
                        if (!s2p || v == Some(vmid)) && (all_asids || a == asid || e.leaf.global));
                    !(hit && overlaps(e.leaf.va, e.leaf.size, addr, len))
                });
            }
            0x20..=0x23 => {
                if !Self::hyp(st) {
                    return Err(ILL);
                }
            }
            0x28 => {
                if !s2p {
                    return Err(ILL);
                }
                self.check_tlbi_after_cfgi(st, |t| match t {
                    TlbTag::S2 { vmid: v } => v == vmid,
                    TlbTag::S1 { vmid: v, .. } => v == Some(vmid),
                });
                st.tlb.retain(|e| match e.tag {
                    TlbTag::S2 { vmid: v } => v != vmid,
                    TlbTag::S1 { vmid: v, .. } => v != Some(vmid),
                });
            }
            0x2a => {
                if !s2p {
                    return Err(ILL);
                }
                let (addr, len) = range_of(w1 & ADDR_51_12);
                st.tlb.retain(|e| !(e.tag == TlbTag::S2 { vmid } && overlaps(e.leaf.va, e.leaf.size, addr, len)));
            }
            0x30 => st.tlb.clear(),
            0x46 => {
                // CMD_SYNC: CS [13:12]; 0b11 is reserved.
                if bits(w0, 12, 2) == 3 {
                    return Err(ILL);
                }
            }
            _ => return Err(ILL),
        }
        Ok(())
    }

    /// CFGI for StreamIDs `lo..=hi`: drop cached configuration (and, with
    /// `l1`, the level-1 descriptors of their spans) and commit the STE
    /// history (playing the adversarial fetch over every version).
    pub(super) fn cfgi(&self, st: &mut State, lo: u32, hi: u32, l1: bool) {
        st.cfg_cache.retain(|sid, _| *sid < lo || *sid > hi);
        if l1 {
            let (_, _, _, split) = Self::strtab_geometry(st);
            let (a, b) = (lo >> split, hi >> split);
            st.l1_cache.retain(|span, _| *span < a || *span > b);
            self.retire_tables(st, a, b, split);
        }
        let sids: Vec<u32> = st.history.keys().copied().filter(|s| (lo..=hi).contains(s)).collect();
        for sid in sids {
            self.commit(st, sid);
        }
    }
}
