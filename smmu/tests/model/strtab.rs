//! Stream table access and the STE and CD decoders (IHI 0070 ch. 5, §5.2, §5.4).

use super::*;

impl Model {
    pub(super) fn strtab_geometry(st: &State) -> (u64, bool, u32, u32) {
        let cfg = u64::from(st.regs.strtab_base_cfg);
        let log2size = bits(cfg, 0, 6) as u32;
        let split = bits(cfg, 6, 5) as u32;
        let two_level = bits(cfg, 16, 2) == 1;
        let base = st.regs.strtab_base & ((1u64 << 52) - 1) & !0x3f;
        (base, two_level, log2size, split)
    }

    /// Where the STE of `sid` lives, locating it through the level-1
    /// descriptor `l1` when given (a cached one) or else the one in memory;
    /// `None` when the level-1 descriptor is invalid.
    pub(super) fn ste_addr(&self, st: &State, sid: u32, l1: Option<u64>) -> Result<Option<u64>, FaultKind> {
        let (base, two_level, log2size, split) = Self::strtab_geometry(st);
        let sidsize = st.idr[1] & 0x3f;
        if u64::from(sid) >= 1u64 << log2size.min(sidsize) {
            return Err(FaultKind::BadStreamId);
        }
        if !two_level {
            return Ok(Some(base + u64::from(sid) * 64));
        }
        let desc = match l1 {
            Some(d) => d,
            None => self.read_l1(st, sid)?,
        };
        let span = bits(desc, 0, 5) as u32;
        if span == 0 {
            return Ok(None);
        }
        let l2 = desc & ((1u64 << 52) - 1) & !0x3f;
        let idx = sid & ((1 << split) - 1);
        if span > 12 || idx >= 1 << (span - 1) {
            return Err(FaultKind::BadSte);
        }
        Ok(Some(l2 + u64::from(idx) * 64))
    }

    /// The level-1 descriptor of `sid`'s span, from memory.
    pub(super) fn read_l1(&self, st: &State, sid: u32) -> Result<u64, FaultKind> {
        let (base, _, _, split) = Self::strtab_geometry(st);
        self.dev_read64(base + u64::from(sid >> split) * 8).ok_or(FaultKind::SteFetch)
    }

    pub(super) fn read_ste_at(&self, addr: u64) -> Result<[u64; 8], FaultKind> {
        let mut w = [0u64; 8];
        for (i, v) in w.iter_mut().enumerate() {
            *v = self.dev_read64(addr + i as u64 * 8).ok_or(FaultKind::SteFetch)?;
        }
        Ok(w)
    }

    /// Reads the STE of `sid` from memory as an uncached fetch would.
    pub(super) fn fetch_ste(&self, st: &State, sid: u32) -> Result<Option<[u64; 8]>, FaultKind> {
        Ok(self.snap(st, sid)?.map(|(_, w)| w))
    }

    /// The STE of `sid` in memory, with its address.
    pub(super) fn snap(&self, st: &State, sid: u32) -> Result<Snap, FaultKind> {
        match self.ste_addr(st, sid, None)? {
            Some(a) => Ok(Some((a, self.read_ste_at(a)?))),
            None => Ok(None),
        }
    }

    /// A fetch through the caches: the level-1 descriptor comes from the
    /// L1STD cache (filled on a miss, invalid descriptors included). An STE
    /// read through a stale descriptor from freed memory is a violation.
    pub(super) fn fetch_ste_cached(&self, st: &mut State, sid: u32) -> Result<Option<[u64; 8]>, FaultKind> {
        let (_, two_level, _, split) = Self::strtab_geometry(st);
        let l1 = if two_level {
            let span = sid >> split;
            let desc = match st.l1_cache.get(&span) {
                Some(d) => *d,
                None => {
                    let d = self.read_l1(st, sid)?;
                    st.l1_cache.insert(span, d);
                    d
                }
            };
            Some(desc)
        } else {
            None
        };
        let Some(addr) = self.ste_addr(st, sid, l1)? else {
            return Ok(None);
        };
        if !self.arena.inside_live(addr, 64) {
            st.violations.push(format!("STE of sid {sid} fetched from freed memory at {addr:#x} (stale level-1 descriptor)"));
        }
        self.read_ste_at(addr).map(Some)
    }

    pub(super) fn decode_cd(&self, st: &State, ptr: u64) -> Result<S1Cfg, FaultKind> {
        let mut w = [0u64; 8];
        for (i, v) in w.iter_mut().enumerate() {
            *v = self.dev_read64(ptr + i as u64 * 8).ok_or(FaultKind::CdFetch)?;
        }
        let w0 = w[0];
        // §5.4: V (31), AA64 (41), A (46), S (44), HA/HD (43/42), ENDI (15).
        if bits(w0, 31, 1) == 0 || bits(w0, 41, 1) == 0 {
            return Err(FaultKind::BadCd);
        }
        if bits(w0, 46, 1) == 0 || bits(w0, 44, 1) == 1 || bits(w0, 42, 2) != 0 || bits(w0, 15, 1) == 1 {
            return Err(FaultKind::BadCd);
        }
        let t0sz = bits(w0, 0, 6) as u8;
        let tg0 = bits(w0, 6, 2);
        let epd0 = bits(w0, 14, 1) == 1;
        let epd1 = bits(w0, 30, 1) == 1;
        if !epd0 && (!(16..=39).contains(&t0sz) || tg0 != 0) {
            // The model implements the 4 KiB granule only.
            return Err(FaultKind::BadCd);
        }
        if !epd1 {
            // TTB1 walks are not modelled (and never wanted here).
            return Err(FaultKind::BadCd);
        }
        let ips = pa_bits(bits(w0, 32, 3)).ok_or(FaultKind::BadCd)?;
        let out_bits = ips.min(Self::oas(st));
        let ttb0 = w[1] & ((1u64 << 52) - 1) & !0xf;
        if ttb0 >> out_bits != 0 {
            return Err(FaultKind::BadCd);
        }
        Ok(S1Cfg { asid: bits(w0, 48, 16) as u16, ttb0, t0sz, out_bits, record: bits(w0, 45, 1) == 1, affd: bits(w0, 35, 1) == 1, mair: w[3], epd0 })
    }

    /// Decodes an STE from the tables of §5.2. `Err` = C_BAD_STE etc.
    pub(super) fn decode_ste(&self, st: &State, w: &[u64; 8]) -> Result<Cfg, FaultKind> {
        if w[0] & 1 == 0 {
            return Err(FaultKind::BadSte);
        }
        let config = bits(w[0], 1, 3);
        if config & 0b100 == 0 {
            return Ok(Cfg::Abort);
        }
        if config == 0b100 {
            return Ok(Cfg::Bypass);
        }
        let s1 = config & 1 != 0;
        let s2 = config & 2 != 0;
        if (s1 && !Self::s1p(st)) || (s2 && !Self::s2p(st)) {
            return Err(FaultKind::BadSte);
        }
        let vmid = bits(w[2], 0, 16) as u16;
        let s2cfg = if s2 {
            let t0sz = bits(w[2], 32, 6) as u8;
            let sl0 = bits(w[2], 38, 2) as u8;
            let sh0 = bits(w[2], 44, 2);
            let tg = bits(w[2], 46, 2);
            let ps = bits(w[2], 48, 3);
            let aa64 = bits(w[2], 51, 1);
            let endi = bits(w[2], 52, 1);
            let affd = bits(w[2], 53, 1) == 1;
            let hd_ha = bits(w[2], 55, 2);
            let s2s = bits(w[2], 57, 1);
            let s2r = bits(w[2], 58, 1) == 1;
            let ttb = w[3] & ((1u64 << 52) - 1) & !0xf;
            if aa64 == 0 || tg != 0 || sl0 == 3 || endi == 1 || s2s == 1 || hd_ha != 0 || sh0 == 1 {
                return Err(FaultKind::BadSte);
            }
            let out_bits = pa_bits(ps).ok_or(FaultKind::BadSte)?.min(Self::oas(st));
            if ttb >> out_bits != 0 {
                return Err(FaultKind::BadSte);
            }
            // S2T0SZ: at most 39, at least max(16, 64 - effective PS).
            if t0sz > 39 || u32::from(t0sz) < (64 - u32::from(out_bits)).max(16) {
                return Err(FaultKind::BadSte);
            }
            let start_level = 2 - sl0;
            // Arm ARM D8.2 (stage 2 starting level, 4 KiB granule): a walk
            // may start at level 0 only with an output size above 42 bits.
            if start_level == 0 && out_bits <= 42 {
                return Err(FaultKind::BadSte);
            }
            let input_bits = 64 - u32::from(t0sz);
            let shift = 12 + 9 * (3 - u32::from(start_level));
            // At least one entry and at most 16 concatenated tables.
            if input_bits <= shift || input_bits - shift > 9 + 4 {
                return Err(FaultKind::BadSte);
            }
            // The top-level (possibly concatenated) table is aligned to its size.
            let top_bytes = 8u64 << (input_bits - shift);
            if !ttb.is_multiple_of(top_bytes) {
                return Err(FaultKind::BadSte);
            }
            Some(S2Cfg { vmid, ttb, t0sz, start_level, out_bits, record: s2r, affd })
        } else {
            None
        };
        let s1cfg = if s1 {
            let s1fmt = bits(w[0], 4, 2);
            let cdmax = bits(w[0], 59, 5);
            let s1dss = bits(w[1], 0, 2);
            let eats = bits(w[1], 28, 2);
            let strw = bits(w[1], 30, 2);
            let ssidsize = bits(u64::from(st.idr[1]), 6, 5);
            if cdmax != 0 && ssidsize == 0 {
                return Err(FaultKind::BadSte);
            }
            if s1fmt != 0 || eats != 0 || strw != 0 {
                return Err(FaultKind::BadSte);
            }
            // QEMU applies S1DSS even with S1CDMax = 0: terminate = abort,
            // bypass = bypass. Model the same so the driver's choice is tested.
            match s1dss {
                0 => return Ok(Cfg::Abort),
                1 => return Ok(Cfg::Bypass),
                3 => return Err(FaultKind::BadSte),
                _ => {}
            }
            let ptr = w[0] & ((1u64 << 52) - 1) & !0x3f;
            // In a nested configuration the CD pointer is an IPA.
            let cd_pa = match s2cfg {
                Some(s2) => match self.walk_s2(&s2, ptr, Access::READ) {
                    Ok(l) => l.oa | (ptr & (l.size - 1)),
                    Err(_) => return Err(FaultKind::CdFetch),
                },
                None => ptr,
            };
            Some(self.decode_cd(st, cd_pa)?)
        } else {
            None
        };
        Ok(match (s1cfg, s2cfg) {
            (Some(s1), None) => Cfg::S1 { vmid: Self::s2p(st).then_some(vmid), s1 },
            (None, Some(s2)) => Cfg::S2(s2),
            (Some(s1), Some(s2)) => Cfg::Nested { s1, s2 },
            (None, None) => Cfg::Abort,
        })
    }
}
