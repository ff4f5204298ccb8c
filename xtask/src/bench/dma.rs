//! What one `edu` DMA costs the SMMU: QEMU's table walks and IOTLB lookups
//! per transfer, through stage 1, stage 2 and stage 1 nested in stage 2,
//! with the window mapped as one 2 MiB block or as 4 KiB pages. The
//! kernel's `bulkhead.selftest=dma` makes N transfers to N distinct pages
//! of its window (`bulkhead.dma-transfers`).

use super::{Figure, Report, Table};
use bulkhead_tests::qemu::{Flavour, Outcome, QemuConfig};
use bulkhead_tests::trace::kind;
use bulkhead_tests::trace::Trace;
use bulkhead_tests::Image;
use std::time::Duration;

/// Translation of the DMA test's domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Stage 1 (virt-9.1, `arm-smmuv3.stage=1`).
    Stage1,
    /// Stage 2 (virt-9.1, `arm-smmuv3.stage=2`).
    Stage2,
    /// Stage 1 inside stage 2 (virt, both stages).
    Nested,
}

/// One per-DMA run.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// The stage.
    pub stage: Stage,
    /// 4 KiB pages instead of the largest blocks.
    pub pages: bool,
}

impl Case {
    /// Every stage with blocks and with pages.
    pub fn all() -> Vec<Case> {
        [Stage::Stage1, Stage::Stage2, Stage::Nested].iter().flat_map(|&stage| [false, true].map(|pages| Case { stage, pages })).collect()
    }
    /// The smoke pass's one run.
    pub fn smoke() -> Case {
        Case { stage: Stage::Stage2, pages: true }
    }
    fn stage_name(&self) -> &'static str {
        match self.stage {
            Stage::Stage1 => "stage 1",
            Stage::Stage2 => "stage 2",
            Stage::Nested => "nested (stage 1 + 2)",
        }
    }
    fn map_name(&self) -> &'static str {
        if self.pages {
            "4 KiB pages"
        } else {
            "2 MiB block"
        }
    }
    /// A short name for directories.
    pub fn slug(&self) -> String {
        format!(
            "{}-{}",
            match self.stage {
                Stage::Stage1 => "s1",
                Stage::Stage2 => "s2",
                Stage::Nested => "nested",
            },
            if self.pages { "pages" } else { "block" }
        )
    }
    /// The QEMU configuration: the DMA self-test, no partitions.
    pub fn config(&self, transfers: u64) -> QemuConfig {
        let (flavour, stage) = match self.stage {
            Stage::Stage1 => (Flavour::Stage1, "1"),
            Stage::Stage2 => (Flavour::Stage2, "2"),
            Stage::Nested => (Flavour::Virt, "nested"),
        };
        QemuConfig {
            flavour,
            extra: vec!["-device".into(), "edu,dma_mask=0xffffffffff".into()],
            append: Some(format!(
                "bulkhead.selftest=dma bulkhead.dma-stage={stage} bulkhead.dma-map={} bulkhead.dma-transfers={transfers}",
                if self.pages { "page" } else { "block" }
            )),
            timeout: Duration::from_secs(240),
            image: Image::Selftest,
            ..QemuConfig::default()
        }
    }
}

/// SMMU work of one transfer, from QEMU's trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// Translation-table levels read (`smmu_ptw_level`), both stages.
    pub levels: u64,
    /// Of which stage-2 levels.
    pub s2_levels: u64,
    /// IOTLB misses.
    pub misses: u64,
    /// IOTLB hits.
    pub hits: u64,
}

/// The trace split at each translation result of `sid`: the SMMU work done
/// for each transfer, in order (successful ones only).
pub fn per_transfer(t: &Trace, sid: u64) -> Vec<Walk> {
    let mut out = Vec::new();
    let mut cur = Walk::default();
    for e in &t.events {
        match e.name.as_str() {
            "smmu_ptw_level" => {
                cur.levels += 1;
                if e.field("stage") == Some(2) {
                    cur.s2_levels += 1;
                }
            }
            "smmu_iotlb_lookup_miss" => cur.misses += 1,
            "smmu_iotlb_lookup_hit" => cur.hits += 1,
            "smmuv3_translate_success" if e.field("sid") == Some(sid) => {
                out.push(cur);
                cur = Walk::default();
            }
            // A fault ends a transfer's work too (the event's trace point
            // is named differently by QEMU 10 and 11).
            _ if kind::EVENT.matches(e) || kind::TRANSLATE_ABORT.matches(e) => cur = Walk::default(),
            _ => {}
        }
    }
    out
}

/// One row of the per-DMA table.
pub type Row = (Case, Result<(Walk, Walk, usize), String>);

/// Figures of one run: the average SMMU work of the benchmark transfers
/// (after the test's own two), and the first of them separately.
pub fn report(c: &Case, o: &Result<Outcome, String>, transfers: u64, r: &mut Report, rows: &mut Vec<Row>) {
    let name = format!("Per DMA, {}, {}", c.stage_name(), c.map_name());
    let got = (|| -> Result<(Walk, Walk, usize), String> {
        let o = o.as_ref().map_err(|e| e.clone())?;
        if o.status != Some(0) {
            return Err(format!("the DMA self-test exited with {:?}", o.status));
        }
        super::line(o, "dma-bench: ").ok_or("the kernel did not run the benchmark transfers")?;
        let sid = super::line(o, "dma-test: edu ").and_then(|l| super::after(l, "StreamID ")).ok_or("no StreamID in the log")?;
        let walks = per_transfer(&o.trace, sid);
        let bench: Vec<Walk> = walks.iter().skip(2).take(transfers as usize).copied().collect();
        if bench.len() != transfers as usize {
            return Err(format!("QEMU translated {} transfers of StreamID {sid:#x}, expected {}", walks.len(), transfers + 2));
        }
        let sum = bench.iter().fold(Walk::default(), |a, w| Walk {
            levels: a.levels + w.levels,
            s2_levels: a.s2_levels + w.s2_levels,
            misses: a.misses + w.misses,
            hits: a.hits + w.hits,
        });
        Ok((sum, walks[0], bench.len()))
    })();
    match &got {
        Ok((sum, first, n)) => {
            let per = |x: u64| x as f64 / *n as f64;
            r.figures.push(
                Figure::new(
                    "per-DMA",
                    name,
                    per(sum.levels),
                    format!(
                        "{:.2} table reads per transfer ({:.2} of them stage 2), IOTLB {:.2} misses / {:.2} hits per transfer, over {n} transfers to distinct pages; cold first transfer {} reads",
                        per(sum.levels),
                        per(sum.s2_levels),
                        per(sum.misses),
                        per(sum.hits),
                        first.levels
                    ),
                )
                .with("iotlb_misses_per_transfer", per(sum.misses))
                .with("iotlb_hits_per_transfer", per(sum.hits))
                .with("stage2_reads_per_transfer", per(sum.s2_levels))
                .with("cold_first_transfer_reads", first.levels as f64),
            );
        }
        Err(e) => r.figures.push(Figure::missing("per-DMA", name, e)),
    }
    rows.push((*c, got));
}

/// The detail table.
pub fn table(rows: Vec<Row>, r: &mut Report) {
    let mut t = Table::new(
        "Per-DMA SMMU work (QEMU trace: smmu_ptw_level = one table descriptor read; IOTLB lookups), each transfer to a page no earlier transfer touched",
        &[
            "translation",
            "mapping",
            "transfers",
            "table reads / transfer",
            "stage-2 reads / transfer",
            "IOTLB misses / transfer",
            "IOTLB hits / transfer",
            "test's first (cold) transfer: reads, misses",
        ],
    );
    for (c, got) in rows {
        match got {
            Ok((s, f, n)) => {
                let per = |x: u64| format!("{:.2}", x as f64 / n as f64);
                t.rows.push(vec![
                    c.stage_name().into(),
                    c.map_name().into(),
                    n.to_string(),
                    per(s.levels),
                    per(s.s2_levels),
                    per(s.misses),
                    per(s.hits),
                    format!("{}, {}", f.levels, f.misses),
                ]);
            }
            Err(e) => t.rows.push(vec![c.stage_name().into(), c.map_name().into(), format!("not measured: {e}")]),
        }
    }
    r.tables.push(t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_split_at_translations() {
        let t = Trace::parse(
            "smmu_iotlb_lookup_miss IOTLB cache MISS asid=-1 vmid=1 addr=0x80000000 hit=0 miss=1 hit rate=0\n\
             smmu_ptw_level stage=2 level=0 iova=0x80000000 subpage_sz=0x8000000000 baseaddr=0x402e9000 offset=0 => pte=0x0\n\
             smmu_ptw_level stage=2 level=1 iova=0x80000000 subpage_sz=0x40000000 baseaddr=0x402ea000 offset=0 => pte=0x0\n\
             smmuv3_translate_success smmuv3-iommu-memory-region-8-1 sid=0x8 iova=0x80000000 translated=0x41400000 perm=0x3 stage=2\n\
             smmu_iotlb_lookup_hit IOTLB cache HIT asid=-1 vmid=1 addr=0x80001000 hit=1 miss=1 hit rate=50\n\
             smmuv3_translate_success smmuv3-iommu-memory-region-8-1 sid=0x8 iova=0x80001000 translated=0x41401000 perm=0x3 stage=2\n",
        );
        let w = per_transfer(&t, 8);
        assert_eq!(w, vec![Walk { levels: 2, s2_levels: 2, misses: 1, hits: 0 }, Walk { levels: 0, s2_levels: 0, misses: 0, hits: 1 }]);
    }

    #[test]
    fn cases_have_distinct_names() {
        let all = Case::all();
        assert_eq!(all.len(), 6);
        let mut slugs: Vec<String> = all.iter().map(Case::slug).collect();
        slugs.sort();
        slugs.dedup();
        assert_eq!(slugs.len(), 6);
        assert!(Case::smoke().config(2).append.unwrap().contains("bulkhead.dma-transfers=2"));
    }
}
