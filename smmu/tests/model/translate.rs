//! Translation through the configuration cache, the L1STD and CD caches and
//! the TLB (IHI 0070 ch. 3).

use super::*;

impl Model {
    /// Translates one access of `sid` to `iova`, using (and filling) the
    /// configuration cache and TLB, recording events like the SMMU.
    pub fn translate(&self, sid: u32, iova: u64, access: Access) -> Outcome {
        self.translate_inner(sid, iova, access, true)
    }

    /// Same walk, but from memory only (no caches, no events): what a
    /// freshly reset SMMU would do.
    pub fn translate_uncached(&self, sid: u32, iova: u64, access: Access) -> Outcome {
        self.translate_inner(sid, iova, access, false)
    }

    pub(super) fn translate_inner(&self, sid: u32, iova: u64, access: Access, cached: bool) -> Outcome {
        let mut st = self.st.borrow_mut();
        if st.regs.cr0 & 1 == 0 {
            if st.regs.gbpa & (1 << 20) != 0 {
                return Outcome::Abort;
            }
            if st.driver_started {
                st.violations.push(format!("bypass: SMMUEN=0 with GBPA.ABORT=0 (sid {sid})"));
            }
            return Outcome::Bypass;
        }
        let cfg = match (cached, st.cfg_cache.get(&sid).copied()) {
            (true, Some(c)) => Ok(c),
            (true, None) => {
                st.cfg_fetches += 1;
                let r = match self.fetch_ste_cached(&mut st, sid) {
                    Ok(Some(w)) => self.decode_ste(&st, &w),
                    Ok(None) => Err(FaultKind::BadStreamId),
                    Err(e) => Err(e),
                };
                // The CD comes from the CD cache when it holds one for this
                // StreamID, whatever the STE now points at: only CFGI_CD*
                // drops it (§4.3).
                let r = r.map(|c| Self::with_cached_cd(&mut st, sid, c));
                if let Ok(c) = r {
                    st.cfg_cache.insert(sid, c);
                }
                r
            }
            (false, _) => {
                st.cfg_fetches += 1;
                match self.fetch_ste(&st, sid) {
                    Ok(Some(w)) => self.decode_ste(&st, &w),
                    Ok(None) => Err(FaultKind::BadStreamId),
                    Err(e) => Err(e),
                }
            }
        };
        let cfg = match cfg {
            Ok(c) => c,
            Err(kind) => {
                if cached {
                    self.record(&mut st, kind, sid, iova, access, false);
                }
                return Outcome::Fault { kind, stage2: false };
            }
        };
        let r = match cfg {
            Cfg::Abort => return Outcome::Abort,
            Cfg::Bypass => {
                st.violations.push(format!("bypass STE in use for sid {sid}"));
                return Outcome::Bypass;
            }
            Cfg::S2(s2) => self.translate_s2(&mut st, &s2, iova, access, cached).map_err(|k| (k, true, s2.record)),
            Cfg::S1 { vmid, s1 } => self.translate_s1(&mut st, vmid, &s1, None, iova, access, cached).map_err(|k| (k, false, s1.record)),
            Cfg::Nested { s1, s2 } => self.translate_nested(&mut st, &s1, &s2, iova, access, cached),
        };
        match r {
            Ok(leaf) => Outcome::Ok { pa: leaf.oa | (iova & (leaf.size - 1)), writable: leaf.write, device: leaf.device },
            Err((kind, stage2, record)) => {
                if cached && record {
                    self.record(&mut st, kind, sid, iova, access, stage2);
                }
                Outcome::Fault { kind, stage2 }
            }
        }
    }

    pub(super) fn translate_s2(&self, st: &mut State, s2: &S2Cfg, ipa: u64, access: Access, cached: bool) -> Result<Leaf, FaultKind> {
        let tag = TlbTag::S2 { vmid: s2.vmid };
        let leaf = match cached.then(|| st.tlb.iter().find(|e| e.tag == tag && ipa.wrapping_sub(e.leaf.va) < e.leaf.size)).flatten() {
            Some(e) => e.leaf,
            None => {
                st.walks += 1;
                let leaf = self.walk_s2(s2, ipa, access)?;
                if cached {
                    st.tlb.push(TlbEntry {
                        tag,
                        leaf,
                        root: s2.ttb,
                        stage2: true,
                        start_level: s2.start_level,
                        input_bits: 64 - s2.t0sz,
                        out_bits: s2.out_bits,
                        affd: s2.affd,
                        mair: 0,
                        nested: None,
                    });
                }
                leaf
            }
        };
        if !Self::check_perm(&leaf, access) {
            return Err(FaultKind::Permission);
        }
        Ok(leaf)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn translate_s1(
        &self,
        st: &mut State,
        vmid: Option<u16>,
        s1: &S1Cfg,
        nested: Option<&S2Cfg>,
        va: u64,
        access: Access,
        cached: bool,
    ) -> Result<Leaf, FaultKind> {
        if s1.epd0 {
            return Err(FaultKind::Translation);
        }
        let hit = cached
            .then(|| {
                st.tlb.iter().find(|e| match e.tag {
                    TlbTag::S1 { vmid: v, asid } => v == vmid && (e.leaf.global || asid == s1.asid) && va.wrapping_sub(e.leaf.va) < e.leaf.size,
                    TlbTag::S2 { .. } => false,
                })
            })
            .flatten();
        let leaf = match hit {
            Some(e) => e.leaf,
            None => {
                st.walks += 1;
                let (start, input_bits) = Self::s1_start(s1.t0sz);
                // Nested: `walk` translates each table address through stage 2.
                let leaf = self.walk(s1.ttb0, start, input_bits, s1.out_bits, va, false, s1.affd, s1.mair, nested)?;
                if cached {
                    st.tlb.push(TlbEntry {
                        tag: TlbTag::S1 { vmid, asid: s1.asid },
                        leaf,
                        root: s1.ttb0,
                        stage2: false,
                        start_level: start,
                        input_bits: input_bits as u8,
                        out_bits: s1.out_bits,
                        affd: s1.affd,
                        mair: s1.mair,
                        nested: None,
                    });
                }
                leaf
            }
        };
        if !Self::check_perm(&leaf, access) {
            return Err(FaultKind::Permission);
        }
        Ok(leaf)
    }

    /// The CD part of `c` as the CD cache has it for `sid` (inserting the
    /// one just decoded on a miss).
    pub(super) fn with_cached_cd(st: &mut State, sid: u32, c: Cfg) -> Cfg {
        let pick = |st: &mut State, s1: S1Cfg| *st.cd_cache.entry(sid).or_insert(s1);
        match c {
            Cfg::S1 { vmid, s1 } => Cfg::S1 { vmid, s1: pick(st, s1) },
            Cfg::Nested { s1, s2 } => Cfg::Nested { s1: pick(st, s1), s2 },
            other => other,
        }
    }

    /// Nested translation. The TLB keeps one combined entry (VA → PA, the
    /// smaller of the two leaves, both stages' permissions) tagged with the
    /// ASID and the stage-2 VMID: invalidating the stage-2 mapping by IPA
    /// does not remove it.
    pub(super) fn translate_nested(
        &self,
        st: &mut State,
        s1: &S1Cfg,
        s2: &S2Cfg,
        va: u64,
        access: Access,
        cached: bool,
    ) -> Result<Leaf, (FaultKind, bool, bool)> {
        let tag = TlbTag::S1 { vmid: Some(s2.vmid), asid: s1.asid };
        if cached {
            let hit = st.tlb.iter().find(|e| {
                e.nested.is_some()
                    && matches!(e.tag, TlbTag::S1 { vmid, asid } if vmid == Some(s2.vmid) && (e.leaf.global || asid == s1.asid))
                    && va.wrapping_sub(e.leaf.va) < e.leaf.size
            });
            if let Some(e) = hit {
                let leaf = e.leaf;
                return if Self::check_perm(&leaf, access) { Ok(leaf) } else { Err((FaultKind::Permission, false, s1.record)) };
            }
        }
        st.walks += 1;
        let leaf = self.walk_nested(s1, s2, va).map_err(|(k, stage2)| (k, stage2, if stage2 { s2.record } else { s1.record }))?;
        if cached {
            let (start, input_bits) = Self::s1_start(s1.t0sz);
            st.tlb.push(TlbEntry {
                tag,
                leaf,
                root: s1.ttb0,
                stage2: false,
                start_level: start,
                input_bits: input_bits as u8,
                out_bits: s1.out_bits,
                affd: s1.affd,
                mair: s1.mair,
                nested: Some(*s2),
            });
        }
        if !Self::check_perm(&leaf, access) {
            return Err((FaultKind::Permission, true, s2.record));
        }
        Ok(leaf)
    }

    /// Walks stage 1 (its table addresses translated by stage 2), then the
    /// output IPA through stage 2: the combined leaf. `Err((kind, stage2))`.
    pub(super) fn walk_nested(&self, s1: &S1Cfg, s2: &S2Cfg, va: u64) -> Result<Leaf, (FaultKind, bool)> {
        if s1.epd0 {
            return Err((FaultKind::Translation, false));
        }
        let (start, input_bits) = Self::s1_start(s1.t0sz);
        let l1 = self.walk(s1.ttb0, start, input_bits, s1.out_bits, va, false, s1.affd, s1.mair, Some(s2)).map_err(|k| (k, false))?;
        let ipa = l1.oa | (va & (l1.size - 1));
        let l2 = self.walk_s2(s2, ipa, Access::READ).map_err(|k| (k, true))?;
        let size = l1.size.min(l2.size);
        let pa = l2.oa | (ipa & (l2.size - 1));
        Ok(Leaf {
            va: va & !(size - 1),
            size,
            oa: pa & !(size - 1),
            read: l1.read && l2.read,
            write: l1.write && l2.write,
            unpriv: l1.unpriv,
            device: l1.device || l2.device,
            global: l1.global,
        })
    }
}
