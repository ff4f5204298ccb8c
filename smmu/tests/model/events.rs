//! Event records and the event queue (§7.3).

use super::*;

impl Model {
    pub(super) fn record(&self, st: &mut State, kind: FaultKind, sid: u32, iova: u64, access: Access, stage2: bool) {
        if st.regs.cr0 & 0b100 == 0 {
            return;
        }
        let mut w = [0u64; 4];
        w[0] = kind.event_code() | (u64::from(sid) << 32);
        let translation = matches!(kind, FaultKind::Translation | FaultKind::AddrSize | FaultKind::Access | FaultKind::Permission | FaultKind::WalkEabt);
        if translation {
            // RnW (35), PnU (33), S2 (39), CLASS=IN (0b10 at [41:40]).
            w[1] = (u64::from(!access.write) << 35) | (u64::from(access.privileged) << 33) | (u64::from(stage2) << 39) | (0b10 << 40);
            w[2] = iova;
            if stage2 {
                w[3] = iova & ADDR_51_12;
            }
        }
        self.push_event(st, w);
    }

    /// Writes a raw event record (tests use it to exercise decoding and
    /// overflow).
    pub fn inject_event(&self, w: [u64; 4]) {
        let mut st = self.st.borrow_mut();
        self.push_event(&mut st, w);
    }

    pub(super) fn push_event(&self, st: &mut State, w: [u64; 4]) {
        if st.regs.cr0 & 0b100 == 0 {
            return;
        }
        let log2 = bits(st.regs.evtq_base, 0, 5) as u32;
        let base = st.regs.evtq_base & ((1u64 << 52) - 1) & !0x1f;
        let mask = (1u32 << (log2 + 1)) - 1;
        let prod = st.regs.evtq_prod & mask;
        let cons = st.regs.evtq_cons & mask;
        if (prod ^ cons) == 1 << log2 {
            // Full: the record is lost; flag overflow unless already flagged
            // and not yet acknowledged (ch. 7).
            let ovflg = st.regs.evtq_prod >> 31;
            let ovack = st.regs.evtq_cons >> 31;
            if ovflg == ovack {
                st.regs.evtq_prod ^= 1 << 31;
            }
            st.events_dropped += 1;
            return;
        }
        let idx = u64::from(prod & ((1 << log2) - 1));
        if (0..4).any(|i| self.is_dirty(base + idx * 32 + i * 8)) {
            self.unpublished_reads.borrow_mut().push(format!("SMMU wrote an event over unpublished CPU data at {:#x}", base + idx * 32));
        }
        for (i, v) in w.iter().enumerate() {
            if !self.arena.write64(base + idx * 32 + i as u64 * 8, *v) {
                st.regs.gerror ^= 1 << 2; // EVENTQ_ABT_ERR
                return;
            }
        }
        st.regs.evtq_prod = (st.regs.evtq_prod & (1 << 31)) | ((prod + 1) & mask);
        st.events_recorded += 1;
    }
}
