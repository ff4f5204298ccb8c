//! What the driver promises once an operation returned (§3.21: structure
//! updates), checked against memory.

use super::*;

impl Model {
    /// Checks the state the driver promises once an operation returned:
    /// every changed STE was invalidated, the configuration cache and the
    /// TLB agree with memory.
    pub fn check_quiescent(&self) {
        let mut st = self.st.borrow_mut();
        let sids: Vec<u32> = st.history.iter().filter(|(_, h)| !h.snapshots.is_empty()).map(|(s, _)| *s).collect();
        for sid in sids {
            let now = self.snap(&st, sid).unwrap_or(None);
            let h = &st.history[&sid];
            let old = h.committed.unwrap_or(None);
            // Terminating → terminating needs no invalidation (nothing
            // translating can have been cached); nor does the same entry
            // found at another address (a level-2 table swapped in for a
            // neighbour's sake): a cached copy is still right.
            let words = |v: &Snap| v.map(|(_, w)| w);
            if words(&old) != words(&now) && !(Self::terminates(&old) && Self::terminates(&now)) {
                st.violations.push(format!("STE of sid {sid} changed but never invalidated"));
            }
        }
        let cached: Vec<(u32, Cfg)> = st.cfg_cache.iter().map(|(k, v)| (*k, *v)).collect();
        for (sid, c) in cached {
            let fresh = match self.fetch_ste(&st, sid) {
                Ok(Some(w)) => self.decode_ste(&st, &w).ok(),
                _ => None,
            };
            if fresh != Some(c) {
                st.violations.push(format!("stale configuration cached for sid {sid}: {c:x?} vs {fresh:x?}"));
            }
        }
        let l1s: Vec<(u32, u64)> = st.l1_cache.iter().map(|(k, v)| (*k, *v)).collect();
        for (span, desc) in l1s {
            let (_, _, _, split) = Self::strtab_geometry(&st);
            let now = self.read_l1(&st, span << split).ok();
            if now != Some(desc) {
                st.violations.push(format!("stale level-1 descriptor cached for span {span}: {desc:#x} vs {now:x?} in memory"));
            }
        }
        let cds: Vec<(u32, S1Cfg)> = st.cd_cache.iter().map(|(k, v)| (*k, *v)).collect();
        for (sid, cd) in cds {
            let fresh = match self.fetch_ste(&st, sid) {
                Ok(Some(w)) => self.decode_ste(&st, &w).ok(),
                _ => None,
            };
            // A CD cached for a stream whose STE no longer uses one is
            // harmless until the STE does again; then it must be the one
            // the STE points at.
            let wanted = match fresh {
                Some(Cfg::S1 { s1, .. }) | Some(Cfg::Nested { s1, .. }) => Some(s1),
                _ => None,
            };
            if wanted.is_some_and(|w| w != cd) {
                st.violations.push(format!("stale CD cached for sid {sid}: {cd:x?} vs {wanted:x?} (no CFGI_CD after the STE changed)"));
            }
        }
        let entries = st.tlb.clone();
        for e in entries {
            let fresh = match e.nested {
                Some(s2) => self.walk(e.root, e.start_level, u32::from(e.input_bits), e.out_bits, e.leaf.va, false, e.affd, e.mair, Some(&s2)).and_then(|l1| {
                    let ipa = l1.oa | (e.leaf.va & (l1.size - 1));
                    let l2 = self.walk_s2(&s2, ipa, Access::READ)?;
                    let size = l1.size.min(l2.size);
                    let pa = l2.oa | (ipa & (l2.size - 1));
                    Ok(Leaf { size, oa: pa & !(size - 1), read: l1.read && l2.read, write: l1.write && l2.write, device: l1.device || l2.device, ..l1 })
                }),
                None => self.walk(e.root, e.start_level, u32::from(e.input_bits), e.out_bits, e.leaf.va, e.stage2, e.affd, e.mair, None),
            };
            let same = matches!(fresh, Ok(l) if l.oa == e.leaf.oa && l.size == e.leaf.size
                && l.write == e.leaf.write && l.read == e.leaf.read && l.device == e.leaf.device);
            if !same {
                st.violations.push(format!("stale TLB entry {e:x?} (fresh walk {fresh:x?})"));
            }
        }
    }

    /// Lets the SMMU consume its command queue now.
    pub fn run_cmdq(&self) {
        let mut st = self.st.borrow_mut();
        self.process_cmdq(&mut st, u32::MAX);
    }

    /// Toggles GERROR bits as the SMMU would on a global error.
    pub fn raise_gerror(&self, bits: u32) {
        self.st.borrow_mut().regs.gerror ^= bits;
    }

    pub fn gerror_active(&self) -> u32 {
        let st = self.st.borrow();
        st.regs.gerror ^ st.regs.gerrorn
    }

    pub fn cmdq_cons(&self) -> u32 {
        self.st.borrow().regs.cmdq_cons
    }

    pub fn tlb_len(&self) -> usize {
        self.st.borrow().tlb.len()
    }

    pub fn cfg_cache_len(&self) -> usize {
        self.st.borrow().cfg_cache.len()
    }

    pub fn opcodes(&self) -> Vec<u8> {
        self.st.borrow().opcodes.clone()
    }

    pub fn clear_opcodes(&self) {
        self.st.borrow_mut().opcodes.clear();
    }

    /// Checks, at SMMUEN 0→1, that every reachable STE terminates.
    pub(super) fn check_all_abort(&self, st: &mut State) {
        let (_, two_level, log2size, split) = Self::strtab_geometry(st);
        let n: u64 = if two_level { 1u64 << log2size.min(16) } else { 1u64 << log2size };
        let step = if two_level { 1u64 << split } else { 1 };
        let mut sid = 0u64;
        while sid < n {
            match self.fetch_ste(st, sid as u32) {
                Ok(None) if two_level => {
                    sid += step;
                    continue;
                }
                Ok(Some(w)) if w[0] & 1 == 1 && bits(w[0], 1, 3) & 0b100 == 0 => {}
                other => {
                    st.violations.push(format!("SMMUEN set while sid {sid} does not abort: {other:x?}"));
                    return;
                }
            }
            sid += 1;
        }
    }
}
