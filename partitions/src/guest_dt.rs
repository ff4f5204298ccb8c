//! The device tree a partition boots with: its memory, its CPUs, its
//! bootargs, and how to reach the kernel. Built from the [`PartitionPlan`]
//! alone, so a partition learns nothing about the rest of the machine.

use crate::validate::PartitionPlan;
use alloc::format;
use alloc::vec::Vec;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};

fn prop<T: dtoolkit::ToPropertyValue>(name: &str, v: T) -> DeviceTreeProperty {
    DeviceTreeProperty::new_unchecked(name, v)
}

fn u64_cells(values: &[u64]) -> Vec<u32> {
    values.iter().flat_map(|v| [(v >> 32) as u32, *v as u32]).collect()
}

/// Serialises the partition's DTB.
pub fn build(p: &PartitionPlan) -> Vec<u8> {
    let mut t = DeviceTree::new();
    let root = &mut t.root;
    root.add_property(prop("#address-cells", 2u32));
    root.add_property(prop("#size-cells", 2u32));
    root.add_property(prop("compatible", "bulkhead,partition-vm"));
    root.add_property(prop("model", "bulkhead partition"));
    root.add_property(prop("bulkhead,partition-name", p.name.as_str()));
    for m in &p.memory {
        let mut n = DeviceTreeNode::new_unchecked(format!("memory@{:x}", m.base.0));
        n.add_property(prop("device_type", "memory"));
        n.add_property(prop("reg", u64_cells(&[m.base.0, m.size])));
        root.add_child(n);
    }
    let mut cpus = DeviceTreeNode::new_unchecked("cpus");
    cpus.add_property(prop("#address-cells", 2u32));
    cpus.add_property(prop("#size-cells", 0u32));
    for c in &p.cpus {
        let mut n = DeviceTreeNode::new_unchecked(format!("cpu@{c:x}"));
        n.add_property(prop("device_type", "cpu"));
        n.add_property(prop("compatible", "arm,armv8"));
        n.add_property(prop("reg", u64_cells(&[*c])));
        cpus.add_child(n);
    }
    root.add_child(cpus);
    let mut hv = DeviceTreeNode::new_unchecked("hypervisor");
    hv.add_property(prop("compatible", "bulkhead,hypercalls"));
    hv.add_property(prop("bulkhead,abi-version", crate::hypercall::ABI_VERSION as u32));
    hv.add_property(prop("bulkhead,partition-id", u32::from(p.id.0)));
    root.add_child(hv);
    let mut chosen = DeviceTreeNode::new_unchecked("chosen");
    chosen.add_property(prop("bootargs", p.bootargs.as_str()));
    root.add_child(chosen);
    t.to_dtb()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::Region;
    use crate::validate::{PartitionId, DEFAULT_FAULT_LIMIT};
    use alloc::string::String;
    use alloc::vec;
    use dtoolkit::fdt::Fdt;
    use dtoolkit::{Node, Property};
    use smmu::PhysAddr;

    #[test]
    fn partition_dtb_has_memory_cpus_and_bootargs() {
        let p = PartitionPlan {
            id: PartitionId(1),
            name: "net".into(),
            memory: vec![Region { base: PhysAddr(0x4800_0000), size: 0x400_0000 }],
            image: None,
            bootargs: String::from("hello exit=0"),
            manager: false,
            fault_limit: DEFAULT_FAULT_LIMIT,
            dma_p2p: false,
            cpus: vec![1],
        };
        let blob = build(&p);
        let fdt = Fdt::new(&blob).unwrap();
        let root = fdt.root();
        let mem = root.child("memory@48000000").unwrap();
        assert_eq!(mem.property("reg").unwrap().value(), &[0, 0, 0, 0, 0x48, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0]);
        let chosen = root.child("chosen").unwrap();
        assert_eq!(chosen.property("bootargs").unwrap().value_as::<&str>().unwrap(), "hello exit=0");
        assert!(root.child("cpus").unwrap().child("cpu@1").is_some());
        assert_eq!(root.property("bulkhead,partition-name").unwrap().value_as::<&str>().unwrap(), "net");
    }
}
