//! `DmaMemory` over the arena, reporting every write to the model.

use super::*;

pub struct TestDma {
    pub model: Rc<Model>,
    pub publishes: u64,
    pub acquires: u64,
    pub releases: u64,
}

impl TestDma {
    pub fn new(model: &Rc<Model>) -> Self {
        TestDma { model: model.clone(), publishes: 0, acquires: 0, releases: 0 }
    }

    fn region_at(&self, pa: u64, len: usize) -> Option<DmaRegion> {
        let virt = self.model.arena.virt(pa)?;
        // SAFETY: the arena outlives this handle (the model is kept alive by
        // `self.model`), the range is inside a live allocation, the memory is
        // only accessed through volatile raw-pointer operations.
        Some(unsafe { DmaRegion::new(PhysAddr(pa), virt, len) })
    }
}

impl DmaMemory for TestDma {
    fn alloc(&mut self, size: usize, align: usize) -> Option<DmaRegion> {
        let (pa, n) = self.model.arena.alloc(size, align)?;
        // Zeroed by the CPU: like any CPU write, invisible to a
        // non-coherent SMMU until published.
        self.model.mark_dirty(pa, size as u64);
        self.region_at(pa, n.min(size.max(align).max(size)))
    }

    fn free(&mut self, region: DmaRegion) {
        self.model.arena.free(region.phys().as_u64(), region.len());
    }

    fn region(&self, phys: PhysAddr, len: usize) -> Option<DmaRegion> {
        if !self.model.arena.inside_live(phys.as_u64(), len) {
            return None;
        }
        self.region_at(phys.as_u64(), len)
    }

    fn publish(&mut self, region: &DmaRegion, offset: usize, len: usize, _coherent: bool) {
        self.publishes += 1;
        self.model.publish(region.phys().as_u64() + offset as u64, len as u64);
    }

    fn acquire(&mut self, _region: &DmaRegion, _offset: usize, _len: usize, _coherent: bool) {
        self.acquires += 1;
    }

    fn release(&mut self) {
        self.releases += 1;
    }

    fn write64(&mut self, region: &DmaRegion, offset: usize, value: u64) -> Result<(), Error> {
        region.write64(offset, value)?;
        let pa = region.phys().as_u64() + offset as u64;
        self.model.mark_dirty(pa, 8);
        self.model.observe_write(pa);
        Ok(())
    }
}

/// A delay that only counts (the model needs no real time).
#[derive(Default)]
pub struct FakeDelay {
    pub ns: u64,
    pub calls: u64,
}

impl DelayNs for FakeDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.ns += u64::from(ns);
        self.calls += 1;
    }
}

pub type TestSmmu<'a> = smmu::Smmu<&'a Model, TestDma, FakeDelay>;

/// A brought-up driver on a fresh model of `flavour`.
pub fn bring_up(model: &Rc<Model>) -> TestSmmu<'_> {
    bring_up_with(model, smmu::Config { dma_coherent: true, ..smmu::Config::default() })
}

pub fn bring_up_with(model: &Rc<Model>, config: smmu::Config) -> TestSmmu<'_> {
    let s = smmu::Smmu::new(&**model, TestDma::new(model), FakeDelay::default(), config).expect("bring-up");
    model.assert_clean();
    s
}
