//! The adversarial STE fetch: every write the driver makes to a live stream
//! table is observed, and at each configuration invalidation every mix of
//! dwords a fetch could have read since the previous one is decoded
//! (§3.21.3: only each 64-bit word is single-copy atomic).

use super::*;

impl Model {
    /// Once the level-1 descriptors of spans `a..=b` are invalidated, no
    /// fetch can still be reading a level-2 table they no longer point at:
    /// versions found there leave every stream's mixing window (the old
    /// committed one still counts as the configuration being replaced).
    pub(super) fn retire_tables(&self, st: &mut State, a: u32, b: u32, split: u32) {
        let sids: Vec<u32> = st.history.keys().copied().filter(|s| (a..=b).contains(&(s >> split))).collect();
        for sid in sids {
            let here = self.snap(st, sid).ok().flatten().map(|(addr, _)| addr);
            let h = st.history.get_mut(&sid).expect("listed");
            h.snapshots.retain(|v| v.is_none_or(|(addr, _)| Some(addr) == here));
            if h.committed.is_some_and(|c| c.is_some_and(|(addr, _)| Some(addr) != here)) {
                h.old_retired = true;
            }
        }
    }

    pub(super) fn terminates(s: &Snap) -> bool {
        match s {
            None => true,
            Some((_, w)) => Self::words_terminate(w),
        }
    }

    pub(super) fn words_terminate(w: &[u64; 8]) -> bool {
        w[0] & 1 == 0 || bits(w[0], 1, 3) & 0b100 == 0
    }

    /// What a fetch of these words configures: `None` when it terminates
    /// (abort, invalid, or an ILLEGAL entry that the SMMU rejects with
    /// C_BAD_STE).
    pub(super) fn fetched_cfg(&self, st: &State, w: &[u64; 8]) -> Option<Cfg> {
        if Self::words_terminate(w) {
            return None;
        }
        self.decode_ste(st, w).ok()
    }

    pub(super) fn commit(&self, st: &mut State, sid: u32) {
        let now = self.snap(st, sid).unwrap_or(None);
        let h = st.history.entry(sid).or_default();
        let old = h.committed.unwrap_or(None);
        let mut versions = std::mem::take(&mut h.snapshots);
        h.committed = Some(now);
        if !std::mem::take(&mut h.old_retired) {
            versions.push(old);
        }
        versions.push(now);
        let cfg_of = |s: &Snap| s.as_ref().and_then(|(_, w)| self.fetched_cfg(st, w));
        let (old_cfg, new_cfg) = (cfg_of(&old), cfg_of(&now));
        // Versions found at the same address can be mixed dword by dword;
        // a fetch reads its level-1 descriptor once, so versions at
        // different addresses (a level-2 table swapped in) never mix.
        let mut addrs: Vec<u64> = versions.iter().flatten().map(|(a, _)| *a).collect();
        addrs.sort_unstable();
        addrs.dedup();
        for addr in addrs {
            let mut choices: [Vec<u64>; 8] = Default::default();
            for (_, w) in versions.iter().flatten().filter(|(a, _)| *a == addr) {
                for (i, c) in choices.iter_mut().enumerate() {
                    if !c.contains(&w[i]) {
                        c.push(w[i]);
                    }
                }
            }
            if let Some(torn) = Self::first_torn(&choices, |w| {
                let c = self.fetched_cfg(st, w);
                c.is_none() || c == old_cfg || c == new_cfg
            }) {
                st.violations.push(format!(
                    "torn STE fetch for sid {sid} at {addr:#x}: {torn:x?} configures {:x?}; old {old_cfg:x?}, new {new_cfg:x?}",
                    self.fetched_cfg(st, &torn)
                ));
                return;
            }
        }
    }

    /// The first combination of one value per dword (from `choices`) that
    /// `ok` rejects: exhaustively up to 4096 combinations, else 4096 drawn
    /// by a fixed-seed generator.
    pub(super) fn first_torn(choices: &[Vec<u64>; 8], ok: impl Fn(&[u64; 8]) -> bool) -> Option<[u64; 8]> {
        let total: u64 = choices.iter().map(|c| c.len() as u64).product();
        let pick = |mut n: u64| {
            let mut w = [0u64; 8];
            for (i, c) in choices.iter().enumerate() {
                w[i] = c[(n % c.len() as u64) as usize];
                n /= c.len() as u64;
            }
            w
        };
        if total <= 4096 {
            return (0..total).map(pick).find(|w| !ok(w));
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                pick(x % total)
            })
            .find(|w| !ok(w))
    }

    /// A TLBI for the tags `matches` selects must come after the
    /// configuration invalidation of every stream that used them: a stream
    /// whose STE changed in memory but is still cached with such a tag could
    /// refill the TLB after the TLBI.
    pub(super) fn check_tlbi_after_cfgi(&self, st: &mut State, matches: impl Fn(TlbTag) -> bool) {
        let stale: Vec<u32> = st
            .cfg_cache
            .iter()
            .filter(|(sid, c)| {
                let tag = match **c {
                    Cfg::S2(s2) => Some(TlbTag::S2 { vmid: s2.vmid }),
                    Cfg::S1 { vmid, s1 } => Some(TlbTag::S1 { vmid, asid: s1.asid }),
                    Cfg::Nested { s1, s2 } => Some(TlbTag::S1 { vmid: Some(s2.vmid), asid: s1.asid }),
                    _ => None,
                };
                tag.is_some_and(&matches)
                    && st.history.get(sid).is_some_and(|h| {
                        // Content, not address: the same entry in a level-2
                        // table swapped in for a neighbour did not change.
                        let words = |v: &Snap| v.map(|(_, w)| w);
                        let old = words(&h.committed.unwrap_or(None));
                        h.snapshots.iter().any(|v| words(v) != old)
                    })
            })
            .map(|(sid, _)| *sid)
            .collect();
        for sid in stale {
            st.violations.push(format!("TLBI issued while sid {sid}'s changed STE was still cached with that tag (TLBI before its CFGI)"));
        }
    }

    /// Called by the test DMA after every 64-bit write by the driver.
    pub fn observe_write(&self, pa: u64) {
        self.dma_writes.set(self.dma_writes.get() + 1);
        self.snapshotting.set(true);
        self.observe_write_inner(pa);
        self.snapshotting.set(false);
    }

    pub(super) fn observe_write_inner(&self, pa: u64) {
        let mut st = self.st.borrow_mut();
        if st.regs.strtab_base_cfg == 0 && st.regs.strtab_base == 0 {
            return;
        }
        let (base, two_level, log2size, split) = Self::strtab_geometry(&st);
        let mut touched: Vec<u32> = Vec::new();
        if two_level {
            let l1_len = 8u64 << log2size.saturating_sub(split);
            if (base..base + l1_len).contains(&pa) {
                let span = ((pa - base) / 8) as u32;
                // Track where this level-2 table lives.
                if let Some(desc) = self.arena.read64(pa & !7) {
                    st.l2_tables.retain(|_, s| *s != span);
                    if bits(desc, 0, 5) != 0 {
                        st.l2_tables.insert(desc & ((1u64 << 52) - 1) & !0x3f, span);
                    }
                }
                let first = span << split;
                touched.extend(first..first + (1 << split));
            } else if let Some((&l2, &span)) = st.l2_tables.range(..=pa).next_back() {
                let len = 64u64 << split;
                if pa < l2 + len {
                    touched.push((span << split) | ((pa - l2) / 64) as u32);
                    self.check_ste_word0_order(&mut st, pa, pa - l2);
                }
            }
        } else {
            let len = 64u64 << log2size;
            if (base..base + len).contains(&pa) {
                touched.push(((pa - base) / 64) as u32);
                self.check_ste_word0_order(&mut st, pa, pa - base);
            }
        }
        if two_level {
            // A level-1 descriptor may only point at a published level-2 table.
            let l1_len = 8u64 << log2size.saturating_sub(split);
            if (base..base + l1_len).contains(&pa) {
                if let Some(desc) = self.arena.read64(pa & !7) {
                    let l2 = desc & ((1u64 << 52) - 1) & !0x3f;
                    if bits(desc, 0, 5) != 0 && (0..(64u64 << split)).step_by(8).any(|o| self.is_dirty(l2 + o)) {
                        st.violations.push(format!("L1 descriptor at {pa:#x} links an unpublished level-2 table"));
                    }
                }
            }
        }
        for sid in touched {
            let snap = self.snap(&st, sid).unwrap_or(None);
            if let Some((_, w)) = snap {
                let cfg = bits(w[0], 1, 3);
                if w[0] & 1 == 1 && (cfg == 0b100 || (cfg & 1 == 1 && bits(w[1], 0, 2) == 1)) {
                    st.violations.push(format!("bypass STE written for sid {sid}: {w:x?}"));
                }
            }
            let h = st.history.entry(sid).or_default();
            if h.committed.is_none() {
                // First sight: before any write, the memory was what the
                // previous snapshot would have shown; treat as terminating.
                h.committed = Some(None);
            }
            h.snapshots.push(snap);
        }
    }

    /// Word 0 of an STE (V, Config) may only be written once words 1..7 are
    /// published, or the SMMU could see the new V/Config with old fields.
    pub(super) fn check_ste_word0_order(&self, st: &mut State, pa: u64, offset_in_table: u64) {
        if !offset_in_table.is_multiple_of(64) {
            return;
        }
        if let Some(w0) = self.arena.read64(pa) {
            let translating = w0 & 1 == 1 && bits(w0, 1, 3) & 0b100 != 0;
            if translating && (1..8).any(|i| self.is_dirty(pa + 8 * i)) {
                st.violations.push(format!("STE word 0 at {pa:#x} written before words 1..7 were published"));
            }
        }
    }
}
