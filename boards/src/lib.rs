//! Board profiles.
//!
//! A profile holds only what the device tree cannot tell the hypervisor before
//! it has parsed it, or cannot tell at all: where the image is linked and
//! loaded, which UART carries the plain-text console before (and unless) the
//! DT's `stdout-path` names one, where the hypervisor's own binary log goes,
//! the coarse physical windows the boot page table maps, and which optional
//! features the board is expected to have. Everything else (memory banks,
//! CPUs, GIC, timers, SMMU, PSCI) is read from the device tree at boot.
//!
//! Profiles are plain data: no logic lives here beyond the constant
//! constructors, so the same tables serve the hypervisor, its build script
//! (linker script generation) and the host runner.
#![no_std]
#![forbid(unsafe_code)]

/// Kind of a UART the hypervisor can drive without the device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PrimeCell PL011 (QEMU virt, Raspberry Pi 4 UART0/2..5).
    Pl011,
    /// Cadence UART (Zynq UltraScale+ uart0/uart1).
    Cadence,
    /// 16550-compatible port I/O UART (x86 COM1).
    Pio16550,
}

/// A UART at a fixed address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    /// Which register interface it has.
    pub kind: UartKind,
    /// Physical MMIO base (or the I/O port for [`UartKind::Pio16550`]).
    pub base: u64,
}

/// Where the hypervisor's own log (defmt frames, or text with `text-log`) goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogChannel {
    /// Arm semihosting `SYS_WRITE` to the `:tt` handle. QEMU routes it to the
    /// chardev named by `-semihosting-config chardev=...`; on hardware it
    /// needs a debugger attached, so only emulator profiles use it.
    Semihosting,
    /// A second UART that carries nothing but log frames.
    Uart(Uart),
    /// The x86 Bochs/QEMU debug port (0xE9).
    DebugPort,
}

/// How the boot page table maps a window of physical address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attr {
    /// Normal memory, write-back cacheable, inner shareable.
    Normal,
    /// Device-nGnRE, never executable.
    Device,
}

/// A window of physical address space in whole GiB, as mapped by the boot
/// page table (1 GiB blocks). Memory banks the DT reports outside the normal
/// windows are not used (and reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First GiB of the window.
    pub first_gib: u64,
    /// Number of GiB.
    pub gibs: u64,
    /// How it is mapped.
    pub attr: Attr,
}

impl Window {
    /// Physical start address.
    pub const fn start(&self) -> u64 {
        self.first_gib << 30
    }
    /// Physical end address (exclusive).
    pub const fn end(&self) -> u64 {
        (self.first_gib + self.gibs) << 30
    }
}

/// Optional hardware the board is expected to have; used to decide what a
/// missing DT node means (an error on a board that should have it, a note
/// otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Features {
    /// An SMMUv3 the hypervisor should use for device assignment.
    pub smmu: bool,
    /// GICv3 (all aarch64 profiles here require it).
    pub gicv3: bool,
    /// Intel VMX (x86 profiles).
    pub vmx: bool,
}

/// Everything the DT cannot say about one board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Short name, as given to `--board` and to the Cargo feature.
    pub name: &'static str,
    /// Human description.
    pub description: &'static str,
    /// Base of the RAM bank the boot loader places the image in.
    pub ram_base: u64,
    /// arm64 Image header `text_offset`: the image is linked at and loaded to
    /// `ram_base + text_offset` (QEMU `-kernel` and U-Boot `booti` both honour it).
    pub text_offset: u64,
    /// Plain-text console before the DT is parsed, and afterwards unless
    /// `/chosen/stdout-path` names a UART of the same kind.
    pub console: Uart,
    /// Where the hypervisor's log goes.
    pub log: LogChannel,
    /// Physical windows mapped by the boot page table, in ascending order.
    pub windows: &'static [Window],
    /// Upper bound on CPUs the image supports (per-CPU tables are sized by it).
    pub max_cpus: usize,
    /// Expected optional hardware.
    pub features: Features,
    /// How to put the image on the board, for the README and `build` output.
    pub flashing: &'static str,
}

impl Profile {
    /// Address the image is linked at and entered at.
    pub const fn load_address(&self) -> u64 {
        self.ram_base + self.text_offset
    }
}

/// QEMU `-M virt,virtualization=on,gic-version=3`.
pub const QEMU_VIRT: Profile = Profile {
    name: "qemu-virt",
    description: "QEMU -M virt,virtualization=on,gic-version=3 (-cpu max), the development board",
    ram_base: 0x4000_0000,
    text_offset: 0x20_0000,
    console: Uart {
        kind: UartKind::Pl011,
        base: 0x0900_0000,
    },
    log: LogChannel::Semihosting,
    windows: &[
        // Flash, GIC, UART, RTC, virtio-mmio, PCIe ECAM window: devices.
        Window {
            first_gib: 0,
            gibs: 1,
            attr: Attr::Device,
        },
        // RAM starts at 1 GiB; map up to 64 GiB of it.
        Window {
            first_gib: 1,
            gibs: 64,
            attr: Attr::Normal,
        },
        // High PCIe MMIO and high redistributors for > 123 CPUs.
        Window {
            first_gib: 256,
            gibs: 256,
            attr: Attr::Device,
        },
    ],
    max_cpus: 8,
    features: Features {
        smmu: false,
        gicv3: true,
        vmx: false,
    },
    flashing: "boot with qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu max -kernel IMAGE",
};

/// Raspberry Pi 4 Model B (BCM2711, GIC-400 is GICv2: see `features`).
pub const RPI4: Profile = Profile {
    name: "rpi4",
    description: "Raspberry Pi 4 Model B (BCM2711), low-peripheral mode",
    ram_base: 0,
    text_offset: 0x20_0000,
    // UART0 (PL011) on GPIO14/15 with `enable_uart=1` and `dtoverlay=disable-bt`.
    console: Uart {
        kind: UartKind::Pl011,
        base: 0xfe20_1000,
    },
    // UART2 (PL011) on GPIO0/1 with `dtoverlay=uart2`: log frames only.
    log: LogChannel::Uart(Uart {
        kind: UartKind::Pl011,
        base: 0xfe20_1400,
    }),
    windows: &[
        // RAM below 3 GiB.
        Window {
            first_gib: 0,
            gibs: 3,
            attr: Attr::Normal,
        },
        // 0xc000_0000..: RAM up to 0xfc00_0000 then the peripherals; mapped as
        // device, so the RAM in this GiB stays unused by the hypervisor.
        Window {
            first_gib: 3,
            gibs: 1,
            attr: Attr::Device,
        },
        // RAM above 4 GiB on the 4 GB and 8 GB models.
        Window {
            first_gib: 4,
            gibs: 4,
            attr: Attr::Normal,
        },
        // PCIe and the 35-bit peripheral window.
        Window {
            first_gib: 24,
            gibs: 8,
            attr: Attr::Device,
        },
    ],
    max_cpus: 4,
    // The BCM2711 carries a GIC-400 (GICv2) and no SMMU: the image builds and
    // reports the board, and the hypervisor refuses to go past GIC bring-up.
    features: Features {
        smmu: false,
        gicv3: false,
        vmx: false,
    },
    flashing: "copy IMAGE to the boot partition as hv.img; boot it with U-Boot `booti ${kernel_addr_r} - ${fdt_addr}` (or `kernel=hv.img` with `kernel_address=0x200000` in config.txt)",
};

/// AMD/Xilinx ZCU102 (Zynq UltraScale+ MPSoC, GIC-400, SMMU-500).
pub const ZCU102: Profile = Profile {
    name: "zcu102",
    description: "AMD Xilinx ZCU102 evaluation board (Zynq UltraScale+ ZU9EG)",
    ram_base: 0,
    text_offset: 0x20_0000,
    console: Uart {
        kind: UartKind::Cadence,
        base: 0xff00_0000,
    },
    log: LogChannel::Uart(Uart {
        kind: UartKind::Cadence,
        base: 0xff01_0000,
    }),
    windows: &[
        // DDR low, 2 GiB.
        Window {
            first_gib: 0,
            gibs: 2,
            attr: Attr::Normal,
        },
        // PL, QSPI, PCIe low, LPD/FPD peripherals, OCM.
        Window {
            first_gib: 2,
            gibs: 2,
            attr: Attr::Device,
        },
        // PL and PCIe high.
        Window {
            first_gib: 4,
            gibs: 28,
            attr: Attr::Device,
        },
        // DDR high from 0x8_0000_0000.
        Window {
            first_gib: 32,
            gibs: 32,
            attr: Attr::Normal,
        },
    ],
    max_cpus: 4,
    // GIC-400 (GICv2) and an SMMU-500 (SMMUv2), not the GICv3/SMMUv3 this
    // hypervisor drives yet.
    features: Features {
        smmu: false,
        gicv3: false,
        vmx: false,
    },
    flashing: "put IMAGE on the SD card's boot partition and run U-Boot `booti 0x200000 - ${fdtcontroladdr}` after loading it with `fatload mmc 0 0x200000 IMAGE`",
};

/// A PC with VMX (x86 backend), booted by Multiboot2.
pub const PC: Profile = Profile {
    name: "pc",
    description: "x86_64 PC with VMX, booted by a Multiboot2 loader (GRUB, QEMU, Bochs)",
    ram_base: 0,
    text_offset: 0x10_0000,
    console: Uart {
        kind: UartKind::Pio16550,
        base: 0x3f8,
    },
    log: LogChannel::DebugPort,
    windows: &[],
    max_cpus: 64,
    features: Features {
        smmu: false,
        gicv3: false,
        vmx: true,
    },
    flashing: "boot IMAGE with any Multiboot2 loader: GRUB `multiboot2 IMAGE [ple_gap=N ple_window=N]`, then one `module2 GUEST.elf NAME [viridian=LIST] [memory=MiB]` per domain",
};

/// Every aarch64 profile.
pub const ARM_PROFILES: &[Profile] = &[QEMU_VIRT, RPI4, ZCU102];

/// Looks a profile up by name.
pub fn by_name(name: &str) -> Option<&'static Profile> {
    [&QEMU_VIRT, &RPI4, &ZCU102, &PC]
        .into_iter()
        .find(|p| p.name == name)
}

/// The profile selected by this build's Cargo features (qemu-virt when none).
pub const SELECTED: Profile = {
    #[cfg(feature = "rpi4")]
    {
        RPI4
    }
    #[cfg(all(feature = "zcu102", not(feature = "rpi4")))]
    {
        ZCU102
    }
    #[cfg(all(feature = "pc", not(any(feature = "rpi4", feature = "zcu102"))))]
    {
        PC
    }
    #[cfg(not(any(feature = "rpi4", feature = "zcu102", feature = "pc")))]
    {
        QEMU_VIRT
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_sorted_and_disjoint() {
        for p in ARM_PROFILES {
            for w in p.windows.windows(2) {
                assert!(
                    w[0].end() <= w[1].start(),
                    "{}: windows overlap or unsorted",
                    p.name
                );
            }
            assert!(
                p.windows.iter().all(|w| w.end() <= 512 << 30),
                "{}: beyond 512 GiB",
                p.name
            );
        }
    }

    #[test]
    fn image_is_loaded_inside_a_normal_window() {
        for p in ARM_PROFILES {
            let a = p.load_address();
            assert!(
                p.windows
                    .iter()
                    .any(|w| w.attr == Attr::Normal && w.start() <= a && a < w.end()),
                "{}: load address {a:#x} not in normal memory",
                p.name
            );
            assert_eq!(
                p.text_offset % 0x20_0000,
                0,
                "{}: text_offset must keep 2 MiB alignment",
                p.name
            );
        }
    }

    #[test]
    fn lookup_by_name() {
        assert_eq!(by_name("rpi4"), Some(&RPI4));
        assert_eq!(by_name("nope"), None);
        assert_eq!(SELECTED.name, "qemu-virt");
    }
}
