//! Host runner library: builds hypervisor images, prepares the host, boots
//! the images under QEMU and decodes the hypervisor's log. The `qemu-virt`
//! binary and the integration tests in `tests/` are both thin users of it.

pub mod bench;
pub mod bochs;
pub mod cargo;
pub mod fixtures;
pub mod host;
pub mod image;
pub mod linux;
pub mod log;
pub mod multi;
pub mod qemu;
pub mod scenario;
pub mod suite;
pub mod testguest;
pub mod tmembench;
