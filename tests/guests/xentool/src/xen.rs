//! The few Xen ABI facts xentool passes through privcmd (Xen's
//! xen/include/public/{xen.h,event_channel.h,grant_table.h,version.h}),
//! with the arm64 layouts (xen_pfn_t is 64-bit there).

/// `__HYPERVISOR_xen_version`.
pub const HYPERVISOR_XEN_VERSION: u64 = 17;
/// `__HYPERVISOR_grant_table_op`.
pub const HYPERVISOR_GRANT_TABLE_OP: u64 = 20;
/// `__HYPERVISOR_event_channel_op`.
pub const HYPERVISOR_EVENT_CHANNEL_OP: u64 = 32;

/// `XENVER_version`: returns `major << 16 | minor`.
pub const XENVER_VERSION: u64 = 0;

/// `DOMID_SELF`.
pub const DOMID_SELF: u16 = 0x7ff0;
/// `DOMID_FIRST_RESERVED`: domain ids at or above are special.
pub const DOMID_FIRST_RESERVED: u32 = 0x7ff0;

/// `EVTCHNOP_send`.
pub const EVTCHNOP_SEND: u64 = 4;
/// `EVTCHNOP_status`.
pub const EVTCHNOP_STATUS: u64 = 5;
/// `EVTCHNSTAT_unbound`.
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
/// `EVTCHNSTAT_interdomain`.
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;

/// `GNTTABOP_map_grant_ref`.
pub const GNTTABOP_MAP_GRANT_REF: u64 = 0;
/// `GNTTABOP_unmap_grant_ref`.
pub const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
/// `GNTMAP_host_map`.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTMAP_readonly`.
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// `GNTCOPY_source_gref`.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;

/// `GNTST_okay`.
pub const GNTST_OKAY: i16 = 0;
/// `GNTST_bad_gntref`: what GNTTABOP_map_grant_ref answers for a grant
/// reference beyond the granter's table.
pub const GNTST_BAD_GNTREF: i16 = -3;

/// The name of a `GNTST_*` status.
pub fn gntst_name(status: i16) -> &'static str {
    match status {
        0 => "GNTST_okay",
        -1 => "GNTST_general_error",
        -2 => "GNTST_bad_domain",
        -3 => "GNTST_bad_gntref",
        -4 => "GNTST_bad_handle",
        -5 => "GNTST_bad_virt_addr",
        -6 => "GNTST_bad_dev_addr",
        -7 => "GNTST_no_device_space",
        -8 => "GNTST_permission_denied",
        -9 => "GNTST_bad_page",
        -10 => "GNTST_bad_copy_arg",
        -11 => "GNTST_address_too_big",
        -12 => "GNTST_eagain",
        -13 => "GNTST_no_space",
        _ => "GNTST_unknown",
    }
}

/// `struct evtchn_send`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnSend {
    /// Local port.
    pub port: u32,
}

/// `struct evtchn_status`, the union read as its `interdomain` member
/// (whose `dom` is also `unbound.dom`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnStatus {
    /// IN: domain (DOMID_SELF or, for a privileged caller, another).
    pub dom: u16,
    /// IN: port.
    pub port: u32,
    /// OUT: EVTCHNSTAT_*.
    pub status: u32,
    /// OUT: vCPU notified.
    pub vcpu: u32,
    /// OUT: `u.interdomain.dom` / `u.unbound.dom`.
    pub remote_dom: u16,
    /// OUT: `u.interdomain.port` (also `u.pirq`/`u.virq` are at offset 16).
    pub remote_port: u32,
}

/// `struct gnttab_map_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabMapGrantRef {
    /// IN: where to map: a guest-physical address on auto-translated
    /// guests (arm64), where Linux passes `__pa()` of a ballooned page.
    pub host_addr: u64,
    /// IN: GNTMAP_*.
    pub flags: u32,
    /// IN: grant reference.
    pub gref: u32,
    /// IN: granting domain.
    pub dom: u16,
    /// OUT: GNTST_*.
    pub status: i16,
    /// OUT: handle for the unmap.
    pub handle: u32,
    /// OUT: bus address of the frame.
    pub dev_bus_addr: u64,
}

/// `struct gnttab_unmap_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabUnmapGrantRef {
    /// IN: the mapping's address (0: ignored).
    pub host_addr: u64,
    /// IN: the device mapping's address (0: ignored).
    pub dev_bus_addr: u64,
    /// IN: handle from the map.
    pub handle: u32,
    /// OUT: GNTST_*.
    pub status: i16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_xen() {
        assert_eq!(size_of::<EvtchnSend>(), 4);
        assert_eq!(size_of::<EvtchnStatus>(), 24);
        assert_eq!(offset_of!(EvtchnStatus, port), 4);
        assert_eq!(offset_of!(EvtchnStatus, status), 8);
        assert_eq!(offset_of!(EvtchnStatus, vcpu), 12);
        assert_eq!(offset_of!(EvtchnStatus, remote_dom), 16);
        assert_eq!(offset_of!(EvtchnStatus, remote_port), 20);

        assert_eq!(size_of::<GnttabMapGrantRef>(), 32);
        assert_eq!(offset_of!(GnttabMapGrantRef, flags), 8);
        assert_eq!(offset_of!(GnttabMapGrantRef, gref), 12);
        assert_eq!(offset_of!(GnttabMapGrantRef, dom), 16);
        assert_eq!(offset_of!(GnttabMapGrantRef, status), 18);
        assert_eq!(offset_of!(GnttabMapGrantRef, handle), 20);
        assert_eq!(offset_of!(GnttabMapGrantRef, dev_bus_addr), 24);

        assert_eq!(size_of::<GnttabUnmapGrantRef>(), 24);
        assert_eq!(offset_of!(GnttabUnmapGrantRef, handle), 16);
        assert_eq!(offset_of!(GnttabUnmapGrantRef, status), 20);
    }

    #[test]
    fn names() {
        assert_eq!(gntst_name(GNTST_BAD_GNTREF), "GNTST_bad_gntref");
        assert_eq!(gntst_name(GNTST_OKAY), "GNTST_okay");
        assert_eq!(gntst_name(-99), "GNTST_unknown");
    }
}
