//! Numbers and layouts of Xen's public guest ABI (xen/include/public/),
//! as the 64-bit little-endian guests of both architectures see them.
//!
//! These are facts of the interface a guest kernel was compiled against;
//! each group names the header it comes from.

/// Domain id as the ABI carries it.
pub type DomId = u16;

/// `DOMID_SELF`: the calling domain.
pub const DOMID_SELF: DomId = 0x7ff0;
/// `DOMID_INVALID`.
pub const DOMID_INVALID: DomId = 0x7ff4;

// ---- xen.h: hypercall numbers ----
pub const HC_MEMORY_OP: u64 = 12;
pub const HC_MULTICALL: u64 = 13;
pub const HC_XEN_VERSION: u64 = 17;
pub const HC_CONSOLE_IO: u64 = 18;
pub const HC_GRANT_TABLE_OP: u64 = 20;
pub const HC_VM_ASSIST: u64 = 21;
pub const HC_VCPU_OP: u64 = 24;
pub const HC_SCHED_OP: u64 = 29;
pub const HC_EVENT_CHANNEL_OP: u64 = 32;
pub const HC_PHYSDEV_OP: u64 = 33;
pub const HC_HVM_OP: u64 = 34;
pub const HC_SYSCTL: u64 = 35;
pub const HC_TMEM_OP: u64 = 38;

// ---- errno values Xen returns (negated), xen/include/public/errno.h ----
pub const EPERM: i32 = 1;
pub const ENOENT: i32 = 2;
pub const ESRCH: i32 = 3;
pub const E2BIG: i32 = 7;
pub const EAGAIN: i32 = 11;
pub const ENOMEM: i32 = 12;
pub const EACCES: i32 = 13;
pub const EFAULT: i32 = 14;
pub const EBUSY: i32 = 16;
pub const EEXIST: i32 = 17;
pub const EXDEV: i32 = 18;
pub const ENODEV: i32 = 19;
pub const EINVAL: i32 = 22;
pub const ENOSPC: i32 = 28;
pub const ERANGE: i32 = 34;
pub const ENOSYS: i32 = 38;
pub const EOPNOTSUPP: i32 = 95;
pub const EISCONN: i32 = 106;
pub const ENOTCONN: i32 = 107;
pub const EALREADY: i32 = 114;

// ---- version.h ----
pub const XENVER_VERSION: u64 = 0;
pub const XENVER_EXTRAVERSION: u64 = 1;
pub const XENVER_COMPILE_INFO: u64 = 2;
pub const XENVER_CAPABILITIES: u64 = 3;
pub const XENVER_CHANGESET: u64 = 4;
pub const XENVER_PLATFORM_PARAMETERS: u64 = 5;
pub const XENVER_GET_FEATURES: u64 = 6;
pub const XENVER_PAGESIZE: u64 = 7;
pub const XENVER_GUEST_HANDLE: u64 = 8;
pub const XENVER_COMMANDLINE: u64 = 9;
pub const XENVER_BUILD_ID: u64 = 10;
/// Major and minor version we answer: 4.17, the release whose guest DT
/// binding ("xen,xen-4.17") we write.
pub const XEN_MAJOR: u64 = 4;
pub const XEN_MINOR: u64 = 17;
/// `xen_extraversion_t` is 16 bytes.
pub const EXTRAVERSION_LEN: usize = 16;
/// `xen_capabilities_info_t` and `xen_changeset_info_t` are 1024 and 64.
pub const CAPABILITIES_LEN: usize = 1024;
pub const CHANGESET_LEN: usize = 64;

// ---- features.h ----
pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
pub const XENFEAT_DOM0: u32 = 11;
pub const XENFEAT_MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
pub const XENFEAT_ARM_SMCCC_SUPPORTED: u32 = 14;
pub const XENFEAT_NOT_DIRECT_MAPPED: u32 = 16;

// ---- xen.h: console_io, vm_assist ----
pub const CONSOLEIO_WRITE: u64 = 0;
pub const CONSOLEIO_READ: u64 = 1;
pub const VMASST_CMD_ENABLE: u64 = 0;
pub const VMASST_CMD_DISABLE: u64 = 1;
/// `VMASST_TYPE_runstate_update_flag`.
pub const VMASST_TYPE_RUNSTATE_UPDATE_FLAG: u64 = 5;

// ---- sched.h ----
pub const SCHEDOP_YIELD: u64 = 0;
pub const SCHEDOP_BLOCK: u64 = 1;
pub const SCHEDOP_SHUTDOWN: u64 = 2;
pub const SCHEDOP_POLL: u64 = 3;
pub const SCHEDOP_REMOTE_SHUTDOWN: u64 = 4;
pub const SCHEDOP_SHUTDOWN_CODE: u64 = 5;
pub const SCHEDOP_WATCHDOG: u64 = 6;
pub const SHUTDOWN_POWEROFF: u32 = 0;
pub const SHUTDOWN_REBOOT: u32 = 1;
pub const SHUTDOWN_SUSPEND: u32 = 2;
pub const SHUTDOWN_CRASH: u32 = 3;
pub const SHUTDOWN_WATCHDOG: u32 = 4;
pub const SHUTDOWN_SOFT_RESET: u32 = 5;
/// `struct sched_poll { XEN_GUEST_HANDLE(evtchn_port_t) ports; unsigned
/// int nr_ports; uint64_t timeout; }`: 24 bytes.
pub const SCHED_POLL_SIZE: usize = 24;

// ---- vcpu.h ----
pub const VCPUOP_INITIALISE: u64 = 0;
pub const VCPUOP_UP: u64 = 1;
pub const VCPUOP_DOWN: u64 = 2;
pub const VCPUOP_IS_UP: u64 = 3;
pub const VCPUOP_GET_RUNSTATE_INFO: u64 = 4;
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
pub const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;
/// `struct vcpu_register_vcpu_info { uint64_t mfn; uint32_t offset;
/// uint32_t rsvd; }`.
pub const REGISTER_VCPU_INFO_SIZE: usize = 16;
/// `struct vcpu_runstate_info`: int state; uint64_t state_entry_time;
/// uint64_t time[4].
pub const RUNSTATE_INFO_SIZE: usize = 48;
pub const RUNSTATE_RUNNING: u32 = 0;
pub const RUNSTATE_RUNNABLE: u32 = 1;
pub const RUNSTATE_BLOCKED: u32 = 2;
pub const RUNSTATE_OFFLINE: u32 = 3;
/// Bit of `state_entry_time` set while the hypervisor updates the area
/// (`XEN_RUNSTATE_UPDATE`, with VMASST_TYPE_runstate_update_flag).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

// ---- xen.h: vcpu_info and shared_info on a 64-bit guest without
// per-architecture fields (arm64: `xen_ulong_t` is 64 bits, arch parts
// empty, XEN_LEGACY_MAX_VCPUS = 1) ----
/// `struct vcpu_info`: upcall_pending u8 @0, upcall_mask u8 @1,
/// evtchn_pending_sel u64 @8, vcpu_time_info (32 bytes) @16.
pub const VCPU_INFO_SIZE: usize = 48;
pub const VCPU_INFO_UPCALL_PENDING: usize = 0;
pub const VCPU_INFO_UPCALL_MASK: usize = 1;
pub const VCPU_INFO_PENDING_SEL: usize = 8;
pub const VCPU_INFO_TIME: usize = 16;
/// vCPUs whose vcpu_info lives in shared_info until they register one.
pub const LEGACY_MAX_VCPUS: u32 = 1;
/// `shared_info.evtchn_pending[64]`.
pub const SHINFO_EVTCHN_PENDING: usize = VCPU_INFO_SIZE * LEGACY_MAX_VCPUS as usize;

/// Where `shared_info` and `vcpu_info` put their fields: the one part of
/// the guest ABI whose layout differs between architectures. The
/// constants above are arm64's; x86 adds `arch_vcpu_info` (cr2 and a pad
/// word) to every vcpu_info and keeps 32 of them in shared_info
/// (XEN_LEGACY_MAX_VCPUS), so its event bitmaps start at 2048.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `sizeof(struct vcpu_info)`.
    pub vcpu_info_size: usize,
    /// vCPUs whose vcpu_info lives in shared_info.
    pub legacy_max_vcpus: u32,
}

impl Layout {
    /// arm64 (and the default).
    pub const ARM64: Layout = Layout {
        vcpu_info_size: VCPU_INFO_SIZE,
        legacy_max_vcpus: LEGACY_MAX_VCPUS,
    };
    /// x86_64 HVM.
    pub const X86_64: Layout = Layout {
        vcpu_info_size: 64,
        legacy_max_vcpus: 32,
    };

    /// `shared_info.evtchn_pending`.
    pub const fn evtchn_pending(&self) -> usize {
        self.vcpu_info_size * self.legacy_max_vcpus as usize
    }

    /// `shared_info.evtchn_mask`.
    pub const fn evtchn_mask(&self) -> usize {
        self.evtchn_pending() + 64 * 8
    }
}
/// `shared_info.evtchn_mask[64]`.
pub const SHINFO_EVTCHN_MASK: usize = SHINFO_EVTCHN_PENDING + 64 * 8;
/// `wc_version`, `wc_sec`, `wc_nsec`, `wc_sec_hi` (u32 each).
pub const SHINFO_WC_VERSION: usize = SHINFO_EVTCHN_MASK + 64 * 8;

// ---- memory.h ----
pub const XENMEM_INCREASE_RESERVATION: u64 = 0;
pub const XENMEM_DECREASE_RESERVATION: u64 = 1;
pub const XENMEM_MAXIMUM_RAM_PAGE: u64 = 2;
pub const XENMEM_CURRENT_RESERVATION: u64 = 3;
pub const XENMEM_MAXIMUM_RESERVATION: u64 = 4;
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
pub const XENMEM_MAXIMUM_GPFN: u64 = 14;
pub const XENMEM_REMOVE_FROM_PHYSMAP: u64 = 15;
pub const XENMEM_ADD_TO_PHYSMAP_BATCH: u64 = 23;
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
pub const XENMAPSPACE_GMFN: u32 = 2;
pub const XENMAPSPACE_GMFN_RANGE: u32 = 3;
pub const XENMAPSPACE_GMFN_FOREIGN: u32 = 4;
pub const XENMAPSPACE_DEV_MMIO: u32 = 5;
/// Grant-table index flag asking for a v2 status frame.
pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;
/// `struct xen_add_to_physmap { domid_t domid; uint16_t size; unsigned
/// int space; xen_ulong_t idx; xen_pfn_t gpfn; }`: 24 bytes.
pub const ADD_TO_PHYSMAP_SIZE: usize = 24;
/// `struct xen_memory_reservation { XEN_GUEST_HANDLE(xen_pfn_t)
/// extent_start; xen_ulong_t nr_extents; unsigned int extent_order;
/// unsigned int mem_flags; domid_t domid; }`: 32 bytes.
pub const MEMORY_RESERVATION_SIZE: usize = 32;
/// `struct xen_remove_from_physmap { domid_t domid; xen_pfn_t gpfn; }`.
pub const REMOVE_FROM_PHYSMAP_SIZE: usize = 16;

// ---- hvm/hvm_op.h, hvm/params.h ----
pub const HVMOP_SET_PARAM: u64 = 0;
pub const HVMOP_GET_PARAM: u64 = 1;
/// `struct xen_hvm_param { domid_t domid; uint16_t pad; uint32_t index;
/// uint64_t value; }`.
pub const HVM_PARAM_SIZE: usize = 16;
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
pub const HVM_PARAM_STORE_PFN: u32 = 1;
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
pub const HVM_PARAM_VIRIDIAN: u32 = 9;
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// `HVM_NR_PARAMS`.
pub const HVM_NR_PARAMS: u32 = 39;
/// HVM_PARAM_VIRIDIAN is a feature mask (`HVMPV_*`). Base and freq
/// groups: the hypercall, VP index and APIC access MSRs plus the TSC and
/// APIC frequency MSRs. Every valid non-zero mask has it.
pub const HVMPV_BASE_FREQ: u64 = 1 << 0;
/// Modifier: without the frequency MSRs (the pre-Xen-4.4 base set).
pub const HVMPV_NO_FREQ: u64 = 1 << 1;
/// The partition time reference counter MSR.
pub const HVMPV_TIME_REF_COUNT: u64 = 1 << 2;
/// Every `HVMPV_*` bit we implement; any other bit is EINVAL.
pub const HVMPV_FEATURE_MASK: u64 = HVMPV_BASE_FREQ | HVMPV_NO_FREQ | HVMPV_TIME_REF_COUNT;

// ---- xen.h: multicall ----
/// `struct multicall_entry { xen_ulong_t op, result; xen_ulong_t
/// args[6]; }`: 64 bytes.
pub const MULTICALL_ENTRY_SIZE: usize = 64;

// ---- event_channel.h ----
pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
pub const EVTCHNOP_BIND_PIRQ: u64 = 2;
pub const EVTCHNOP_CLOSE: u64 = 3;
pub const EVTCHNOP_SEND: u64 = 4;
pub const EVTCHNOP_STATUS: u64 = 5;
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
pub const EVTCHNOP_BIND_IPI: u64 = 7;
pub const EVTCHNOP_BIND_VCPU: u64 = 8;
pub const EVTCHNOP_UNMASK: u64 = 9;
pub const EVTCHNOP_RESET: u64 = 10;
pub const EVTCHNOP_INIT_CONTROL: u64 = 11;
pub const EVTCHNOP_EXPAND_ARRAY: u64 = 12;
pub const EVTCHNOP_SET_PRIORITY: u64 = 13;
pub const EVTCHNOP_RESET_CONT: u64 = 14;
pub const EVTCHNSTAT_CLOSED: u32 = 0;
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
pub const EVTCHNSTAT_PIRQ: u32 = 3;
pub const EVTCHNSTAT_VIRQ: u32 = 4;
pub const EVTCHNSTAT_IPI: u32 = 5;
/// Virtual interrupts (xen.h VIRQ_*).
pub const VIRQ_TIMER: u32 = 0;
pub const VIRQ_DEBUG: u32 = 1;
pub const VIRQ_CONSOLE: u32 = 2;
pub const VIRQ_DOM_EXC: u32 = 3;
pub const VIRQ_DEBUGGER: u32 = 6;
pub const NR_VIRQS: u32 = 24;
/// 2-level ABI: 64 × 64 ports on a 64-bit guest.
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
pub const EVTCHN_FIFO_MAX_QUEUES: u32 = 16;
pub const EVTCHN_FIFO_PENDING: u32 = 31;
pub const EVTCHN_FIFO_MASKED: u32 = 30;
pub const EVTCHN_FIFO_LINKED: u32 = 29;
pub const EVTCHN_FIFO_BUSY: u32 = 28;
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;
/// `struct evtchn_fifo_control_block { uint32_t ready; uint32_t _rsvd;
/// uint32_t head[16]; }`: 72 bytes.
pub const EVTCHN_FIFO_CONTROL_BLOCK_SIZE: usize = 72;

// ---- grant_table.h ----
pub const GNTTABOP_MAP_GRANT_REF: u64 = 0;
pub const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
pub const GNTTABOP_SETUP_TABLE: u64 = 2;
pub const GNTTABOP_DUMP_TABLE: u64 = 3;
pub const GNTTABOP_TRANSFER: u64 = 4;
pub const GNTTABOP_COPY: u64 = 5;
pub const GNTTABOP_QUERY_SIZE: u64 = 6;
pub const GNTTABOP_UNMAP_AND_REPLACE: u64 = 7;
pub const GNTTABOP_SET_VERSION: u64 = 8;
pub const GNTTABOP_GET_STATUS_FRAMES: u64 = 9;
pub const GNTTABOP_GET_VERSION: u64 = 10;
pub const GNTTABOP_SWAP_GRANT_REF: u64 = 11;
pub const GNTTABOP_CACHE_FLUSH: u64 = 12;
pub const GTF_INVALID: u16 = 0;
pub const GTF_PERMIT_ACCESS: u16 = 1;
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
pub const GTF_TRANSITIVE: u16 = 3;
pub const GTF_TYPE_MASK: u16 = 3;
pub const GTF_READONLY: u16 = 1 << 2;
pub const GTF_READING: u16 = 1 << 3;
pub const GTF_WRITING: u16 = 1 << 4;
pub const GTF_SUB_PAGE: u16 = 1 << 8;
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
pub const GNTMAP_READONLY: u32 = 1 << 2;
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;
pub const GNTST_OKAY: i16 = 0;
pub const GNTST_GENERAL_ERROR: i16 = -1;
pub const GNTST_BAD_DOMAIN: i16 = -2;
pub const GNTST_BAD_GNTREF: i16 = -3;
pub const GNTST_BAD_HANDLE: i16 = -4;
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
pub const GNTST_PERMISSION_DENIED: i16 = -8;
pub const GNTST_BAD_PAGE: i16 = -9;
pub const GNTST_BAD_COPY_ARG: i16 = -10;
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
pub const GNTST_EAGAIN: i16 = -12;
pub const GNTST_NO_SPACE: i16 = -13;
/// `struct grant_entry_v1 { uint16_t flags; domid_t domid; uint32_t
/// frame; }`: 8 bytes, 512 per page.
pub const GRANT_ENTRY_V1_SIZE: usize = 8;
pub const GRANT_ENTRIES_PER_FRAME: u32 = 512;

/// Reads a little-endian integer field of a guest structure.
pub fn get_u16(b: &[u8], off: usize) -> u16 {
    let mut v = [0u8; 2];
    if let Some(s) = b.get(off..off + 2) {
        v.copy_from_slice(s);
    }
    u16::from_le_bytes(v)
}

/// Reads a little-endian u32 field.
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

/// Reads a little-endian u64 field.
pub fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// Writes a little-endian u16 field (ignored outside `b`).
pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
    if let Some(s) = b.get_mut(off..off + 2) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Writes a little-endian u32 field.
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    if let Some(s) = b.get_mut(off..off + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Writes a little-endian u64 field.
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    if let Some(s) = b.get_mut(off..off + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}
