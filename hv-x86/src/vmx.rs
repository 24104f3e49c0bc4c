//! VMX facts and the choice of VM-execution controls.
//!
//! Owns the architectural numbers of Intel VMX (MSR indices, VMCS field
//! encodings, exit reasons, control bits), the reading of the VMX capability
//! MSRs into [`Caps`], the control words guests run with ([`compute`]), and
//! decoders for exit qualifications and event information.
//!
//! Never executes a VMX instruction, never touches an MSR or the VMCS itself
//! (the binary reads them and hands the values in), and never panics on what
//! a CPU reports: capability MSRs may come from an outer hypervisor, so a
//! contradictory or missing value is a [`Refusal`], not an assumption.

use core::fmt;

/// Architectural MSR indices (Intel SDM vol. 4).
pub mod msr {
    pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_DEBUGCTL: u32 = 0x1D9;
    pub const IA32_PAT: u32 = 0x277;
    pub const IA32_VMX_BASIC: u32 = 0x480;
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    pub const IA32_VMX_MISC: u32 = 0x485;
    pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
    pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
    pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
    pub const IA32_EFER: u32 = 0xC000_0080;
    pub const IA32_FS_BASE: u32 = 0xC000_0100;
    pub const IA32_GS_BASE: u32 = 0xC000_0101;
    pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;

    /// IA32_FEATURE_CONTROL: once set, the MSR is read-only until reset.
    pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
    /// IA32_FEATURE_CONTROL: VMXON allowed inside SMX (TXT) operation.
    pub const FEATURE_CONTROL_VMXON_IN_SMX: u64 = 1 << 1;
    /// IA32_FEATURE_CONTROL: VMXON allowed outside SMX operation.
    pub const FEATURE_CONTROL_VMXON_OUTSIDE_SMX: u64 = 1 << 2;
}

/// VMCS field encodings (Intel SDM vol. 3, appendix B).
///
/// An encoding is: bit 0 access (high half of a 64-bit field), bits 9:1
/// index, bits 11:10 type (control, read-only, guest, host), bits 14:13
/// width (16-bit, 64-bit, 32-bit, natural). Only full-access encodings are
/// listed; the binary is 64-bit and never needs the high halves.
pub mod field {
    // 16-bit control.
    pub const VPID: u32 = 0x0000;
    pub const POSTED_INTERRUPT_VECTOR: u32 = 0x0002;
    pub const EPTP_INDEX: u32 = 0x0004;

    // 16-bit guest state.
    pub const GUEST_ES_SELECTOR: u32 = 0x0800;
    pub const GUEST_CS_SELECTOR: u32 = 0x0802;
    pub const GUEST_SS_SELECTOR: u32 = 0x0804;
    pub const GUEST_DS_SELECTOR: u32 = 0x0806;
    pub const GUEST_FS_SELECTOR: u32 = 0x0808;
    pub const GUEST_GS_SELECTOR: u32 = 0x080A;
    pub const GUEST_LDTR_SELECTOR: u32 = 0x080C;
    pub const GUEST_TR_SELECTOR: u32 = 0x080E;
    pub const GUEST_INTERRUPT_STATUS: u32 = 0x0810;
    pub const GUEST_PML_INDEX: u32 = 0x0812;

    // 16-bit host state.
    pub const HOST_ES_SELECTOR: u32 = 0x0C00;
    pub const HOST_CS_SELECTOR: u32 = 0x0C02;
    pub const HOST_SS_SELECTOR: u32 = 0x0C04;
    pub const HOST_DS_SELECTOR: u32 = 0x0C06;
    pub const HOST_FS_SELECTOR: u32 = 0x0C08;
    pub const HOST_GS_SELECTOR: u32 = 0x0C0A;
    pub const HOST_TR_SELECTOR: u32 = 0x0C0C;

    // 64-bit control.
    pub const IO_BITMAP_A: u32 = 0x2000;
    pub const IO_BITMAP_B: u32 = 0x2002;
    pub const MSR_BITMAP: u32 = 0x2004;
    pub const EXIT_MSR_STORE_ADDR: u32 = 0x2006;
    pub const EXIT_MSR_LOAD_ADDR: u32 = 0x2008;
    pub const ENTRY_MSR_LOAD_ADDR: u32 = 0x200A;
    pub const EXECUTIVE_VMCS_POINTER: u32 = 0x200C;
    pub const PML_ADDRESS: u32 = 0x200E;
    pub const TSC_OFFSET: u32 = 0x2010;
    pub const VIRTUAL_APIC_ADDRESS: u32 = 0x2012;
    pub const APIC_ACCESS_ADDRESS: u32 = 0x2014;
    pub const POSTED_INTERRUPT_DESCRIPTOR: u32 = 0x2016;
    pub const VM_FUNCTION_CONTROLS: u32 = 0x2018;
    pub const EPT_POINTER: u32 = 0x201A;
    pub const EOI_EXIT_BITMAP0: u32 = 0x201C;
    pub const EOI_EXIT_BITMAP1: u32 = 0x201E;
    pub const EOI_EXIT_BITMAP2: u32 = 0x2020;
    pub const EOI_EXIT_BITMAP3: u32 = 0x2022;
    pub const EPTP_LIST_ADDRESS: u32 = 0x2024;
    pub const VMREAD_BITMAP: u32 = 0x2026;
    pub const VMWRITE_BITMAP: u32 = 0x2028;
    pub const VE_INFO_ADDRESS: u32 = 0x202A;
    /// Consulted when "enable XSAVES/XRSTORS" is set: write 0 so that no
    /// XSS bit makes XSAVES/XRSTORS exit.
    pub const XSS_EXIT_BITMAP: u32 = 0x202C;
    pub const ENCLS_EXIT_BITMAP: u32 = 0x202E;
    pub const TSC_MULTIPLIER: u32 = 0x2032;

    // 64-bit read-only.
    pub const GUEST_PHYSICAL_ADDRESS: u32 = 0x2400;

    // 64-bit guest state.
    /// Must be all ones: this hypervisor does not use VMCS shadowing.
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    pub const GUEST_IA32_DEBUGCTL: u32 = 0x2802;
    pub const GUEST_IA32_PAT: u32 = 0x2804;
    pub const GUEST_IA32_EFER: u32 = 0x2806;
    pub const GUEST_IA32_PERF_GLOBAL_CTRL: u32 = 0x2808;
    pub const GUEST_PDPTE0: u32 = 0x280A;
    pub const GUEST_PDPTE1: u32 = 0x280C;
    pub const GUEST_PDPTE2: u32 = 0x280E;
    pub const GUEST_PDPTE3: u32 = 0x2810;

    // 64-bit host state.
    pub const HOST_IA32_PAT: u32 = 0x2C00;
    pub const HOST_IA32_EFER: u32 = 0x2C02;
    pub const HOST_IA32_PERF_GLOBAL_CTRL: u32 = 0x2C04;

    // 32-bit control.
    pub const PIN_CONTROLS: u32 = 0x4000;
    pub const PROC_CONTROLS: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const PAGE_FAULT_ERROR_MASK: u32 = 0x4006;
    pub const PAGE_FAULT_ERROR_MATCH: u32 = 0x4008;
    pub const CR3_TARGET_COUNT: u32 = 0x400A;
    pub const EXIT_CONTROLS: u32 = 0x400C;
    pub const EXIT_MSR_STORE_COUNT: u32 = 0x400E;
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    pub const ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    pub const VM_ENTRY_INTR_INFO: u32 = 0x4016;
    pub const ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
    pub const ENTRY_INSTRUCTION_LEN: u32 = 0x401A;
    pub const TPR_THRESHOLD: u32 = 0x401C;
    pub const SECONDARY_PROC_CONTROLS: u32 = 0x401E;
    pub const PLE_GAP: u32 = 0x4020;
    pub const PLE_WINDOW: u32 = 0x4022;

    // 32-bit read-only.
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
    pub const EXIT_REASON: u32 = 0x4402;
    pub const EXIT_INTR_INFO: u32 = 0x4404;
    pub const EXIT_INTR_ERROR_CODE: u32 = 0x4406;
    pub const IDT_VECTORING_INFO: u32 = 0x4408;
    pub const IDT_VECTORING_ERROR: u32 = 0x440A;
    pub const EXIT_INSTRUCTION_LEN: u32 = 0x440C;
    pub const VMX_INSTRUCTION_INFO: u32 = 0x440E;

    // 32-bit guest state.
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    pub const GUEST_CS_LIMIT: u32 = 0x4802;
    pub const GUEST_SS_LIMIT: u32 = 0x4804;
    pub const GUEST_DS_LIMIT: u32 = 0x4806;
    pub const GUEST_FS_LIMIT: u32 = 0x4808;
    pub const GUEST_GS_LIMIT: u32 = 0x480A;
    pub const GUEST_LDTR_LIMIT: u32 = 0x480C;
    pub const GUEST_TR_LIMIT: u32 = 0x480E;
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    pub const GUEST_ES_ACCESS_RIGHTS: u32 = 0x4814;
    pub const GUEST_CS_ACCESS_RIGHTS: u32 = 0x4816;
    pub const GUEST_SS_ACCESS_RIGHTS: u32 = 0x4818;
    pub const GUEST_DS_ACCESS_RIGHTS: u32 = 0x481A;
    pub const GUEST_FS_ACCESS_RIGHTS: u32 = 0x481C;
    pub const GUEST_GS_ACCESS_RIGHTS: u32 = 0x481E;
    pub const GUEST_LDTR_ACCESS_RIGHTS: u32 = 0x4820;
    pub const GUEST_TR_ACCESS_RIGHTS: u32 = 0x4822;
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    pub const GUEST_ACTIVITY_STATE: u32 = 0x4826;
    pub const GUEST_SMBASE: u32 = 0x4828;
    pub const GUEST_SYSENTER_CS: u32 = 0x482A;
    pub const PREEMPTION_TIMER_VALUE: u32 = 0x482E;

    // 32-bit host state.
    pub const HOST_SYSENTER_CS: u32 = 0x4C00;

    // Natural-width control.
    pub const CR0_GUEST_HOST_MASK: u32 = 0x6000;
    pub const CR4_GUEST_HOST_MASK: u32 = 0x6002;
    pub const CR0_READ_SHADOW: u32 = 0x6004;
    pub const CR4_READ_SHADOW: u32 = 0x6006;
    pub const CR3_TARGET_VALUE0: u32 = 0x6008;
    pub const CR3_TARGET_VALUE1: u32 = 0x600A;
    pub const CR3_TARGET_VALUE2: u32 = 0x600C;
    pub const CR3_TARGET_VALUE3: u32 = 0x600E;

    // Natural-width read-only.
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    pub const IO_RCX: u32 = 0x6402;
    pub const IO_RSI: u32 = 0x6404;
    pub const IO_RDI: u32 = 0x6406;
    pub const IO_RIP: u32 = 0x6408;
    pub const GUEST_LINEAR_ADDRESS: u32 = 0x640A;

    // Natural-width guest state.
    pub const GUEST_CR0: u32 = 0x6800;
    pub const GUEST_CR3: u32 = 0x6802;
    pub const GUEST_CR4: u32 = 0x6804;
    pub const GUEST_ES_BASE: u32 = 0x6806;
    pub const GUEST_CS_BASE: u32 = 0x6808;
    pub const GUEST_SS_BASE: u32 = 0x680A;
    pub const GUEST_DS_BASE: u32 = 0x680C;
    pub const GUEST_FS_BASE: u32 = 0x680E;
    pub const GUEST_GS_BASE: u32 = 0x6810;
    pub const GUEST_LDTR_BASE: u32 = 0x6812;
    pub const GUEST_TR_BASE: u32 = 0x6814;
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    pub const GUEST_DR7: u32 = 0x681A;
    pub const GUEST_RSP: u32 = 0x681C;
    pub const GUEST_RIP: u32 = 0x681E;
    pub const GUEST_RFLAGS: u32 = 0x6820;
    pub const GUEST_PENDING_DBG_EXCEPTIONS: u32 = 0x6822;
    pub const GUEST_SYSENTER_ESP: u32 = 0x6824;
    pub const GUEST_SYSENTER_EIP: u32 = 0x6826;

    // Natural-width host state.
    pub const HOST_CR0: u32 = 0x6C00;
    pub const HOST_CR3: u32 = 0x6C02;
    pub const HOST_CR4: u32 = 0x6C04;
    pub const HOST_FS_BASE: u32 = 0x6C06;
    pub const HOST_GS_BASE: u32 = 0x6C08;
    pub const HOST_TR_BASE: u32 = 0x6C0A;
    pub const HOST_GDTR_BASE: u32 = 0x6C0C;
    pub const HOST_IDTR_BASE: u32 = 0x6C0E;
    pub const HOST_SYSENTER_ESP: u32 = 0x6C10;
    pub const HOST_SYSENTER_EIP: u32 = 0x6C12;
    pub const HOST_RSP: u32 = 0x6C14;
    pub const HOST_RIP: u32 = 0x6C16;
}

/// Basic exit reasons (Intel SDM vol. 3, appendix C).
pub mod exit {
    pub const EXCEPTION_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const SIPI: u32 = 4;
    pub const IO_SMI: u32 = 5;
    pub const OTHER_SMI: u32 = 6;
    pub const INTERRUPT_WINDOW: u32 = 7;
    pub const NMI_WINDOW: u32 = 8;
    pub const TASK_SWITCH: u32 = 9;
    pub const CPUID: u32 = 10;
    pub const GETSEC: u32 = 11;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const INVLPG: u32 = 14;
    pub const RDPMC: u32 = 15;
    pub const RDTSC: u32 = 16;
    pub const RSM: u32 = 17;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMLAUNCH: u32 = 20;
    pub const VMPTRLD: u32 = 21;
    pub const VMPTRST: u32 = 22;
    pub const VMREAD: u32 = 23;
    pub const VMRESUME: u32 = 24;
    pub const VMWRITE: u32 = 25;
    pub const VMXOFF: u32 = 26;
    pub const VMXON: u32 = 27;
    pub const CR_ACCESS: u32 = 28;
    pub const DR_ACCESS: u32 = 29;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const ENTRY_FAIL_GUEST_STATE: u32 = 33;
    pub const ENTRY_FAIL_MSR: u32 = 34;
    pub const MWAIT: u32 = 36;
    pub const MTF: u32 = 37;
    pub const MONITOR: u32 = 39;
    pub const PAUSE: u32 = 40;
    pub const ENTRY_FAIL_MCE: u32 = 41;
    pub const TPR_BELOW: u32 = 43;
    pub const APIC_ACCESS: u32 = 44;
    pub const VIRTUALIZED_EOI: u32 = 45;
    pub const GDTR_IDTR: u32 = 46;
    pub const LDTR_TR: u32 = 47;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const INVEPT: u32 = 50;
    pub const RDTSCP: u32 = 51;
    pub const PREEMPTION_TIMER: u32 = 52;
    pub const INVVPID: u32 = 53;
    pub const WBINVD: u32 = 54;
    pub const XSETBV: u32 = 55;
    pub const APIC_WRITE: u32 = 56;
    pub const RDRAND: u32 = 57;
    pub const INVPCID: u32 = 58;
    pub const VMFUNC: u32 = 59;
    pub const ENCLS: u32 = 60;
    pub const RDSEED: u32 = 61;
    pub const PML_FULL: u32 = 62;
    pub const XSAVES: u32 = 63;
    pub const XRSTORS: u32 = 64;
    pub const PCONFIG: u32 = 65;
    pub const SPP: u32 = 66;
    pub const UMWAIT: u32 = 67;
    pub const TPAUSE: u32 = 68;
    pub const LOADIWKEY: u32 = 69;
    pub const ENCLV: u32 = 70;
    pub const ENQCMD_PASID: u32 = 72;
    pub const ENQCMDS_PASID: u32 = 73;
    pub const BUS_LOCK: u32 = 74;
    pub const INSTRUCTION_TIMEOUT: u32 = 75;

    /// Exit-reason field bit 31: the VM entry itself failed.
    pub const ENTRY_FAILURE: u32 = 1 << 31;

    /// The basic exit reason: bits 15:0 of the exit-reason field.
    pub const fn basic(raw: u32) -> u32 {
        raw & 0xFFFF
    }

    /// Whether the exit-reason field reports a failed VM entry.
    pub const fn is_entry_failure(raw: u32) -> bool {
        raw & ENTRY_FAILURE != 0
    }

    /// A short name for log lines; takes the raw field or the basic reason.
    pub fn name(reason: u32) -> &'static str {
        match basic(reason) {
            EXCEPTION_NMI => "exception or NMI",
            EXTERNAL_INTERRUPT => "external interrupt",
            TRIPLE_FAULT => "triple fault",
            INIT => "INIT signal",
            SIPI => "start-up IPI",
            IO_SMI => "I/O SMI",
            OTHER_SMI => "other SMI",
            INTERRUPT_WINDOW => "interrupt window",
            NMI_WINDOW => "NMI window",
            TASK_SWITCH => "task switch",
            CPUID => "CPUID",
            GETSEC => "GETSEC",
            HLT => "HLT",
            INVD => "INVD",
            INVLPG => "INVLPG",
            RDPMC => "RDPMC",
            RDTSC => "RDTSC",
            RSM => "RSM",
            VMCALL => "VMCALL",
            VMCLEAR => "VMCLEAR",
            VMLAUNCH => "VMLAUNCH",
            VMPTRLD => "VMPTRLD",
            VMPTRST => "VMPTRST",
            VMREAD => "VMREAD",
            VMRESUME => "VMRESUME",
            VMWRITE => "VMWRITE",
            VMXOFF => "VMXOFF",
            VMXON => "VMXON",
            CR_ACCESS => "control-register access",
            DR_ACCESS => "debug-register access",
            IO => "I/O instruction",
            RDMSR => "RDMSR",
            WRMSR => "WRMSR",
            ENTRY_FAIL_GUEST_STATE => "VM-entry failure: invalid guest state",
            ENTRY_FAIL_MSR => "VM-entry failure: MSR loading",
            MWAIT => "MWAIT",
            MTF => "monitor trap flag",
            MONITOR => "MONITOR",
            PAUSE => "PAUSE",
            ENTRY_FAIL_MCE => "VM-entry failure: machine check",
            TPR_BELOW => "TPR below threshold",
            APIC_ACCESS => "APIC access",
            VIRTUALIZED_EOI => "virtualized EOI",
            GDTR_IDTR => "GDTR or IDTR access",
            LDTR_TR => "LDTR or TR access",
            EPT_VIOLATION => "EPT violation",
            EPT_MISCONFIG => "EPT misconfiguration",
            INVEPT => "INVEPT",
            RDTSCP => "RDTSCP",
            PREEMPTION_TIMER => "preemption timer expired",
            INVVPID => "INVVPID",
            WBINVD => "WBINVD",
            XSETBV => "XSETBV",
            APIC_WRITE => "APIC write",
            RDRAND => "RDRAND",
            INVPCID => "INVPCID",
            VMFUNC => "VMFUNC",
            ENCLS => "ENCLS",
            RDSEED => "RDSEED",
            PML_FULL => "page-modification log full",
            XSAVES => "XSAVES",
            XRSTORS => "XRSTORS",
            PCONFIG => "PCONFIG",
            SPP => "sub-page permission event",
            UMWAIT => "UMWAIT",
            TPAUSE => "TPAUSE",
            LOADIWKEY => "LOADIWKEY",
            ENCLV => "ENCLV",
            ENQCMD_PASID => "ENQCMD PASID translation failure",
            ENQCMDS_PASID => "ENQCMDS PASID translation failure",
            BUS_LOCK => "bus lock",
            INSTRUCTION_TIMEOUT => "instruction timeout",
            _ => "unknown exit reason",
        }
    }
}

/// VM-instruction error numbers (read from `VM_INSTRUCTION_ERROR` after a
/// VMX instruction fails with a valid current VMCS).
pub mod instruction_error {
    /// What the error number means, for log lines.
    pub fn name(code: u32) -> &'static str {
        match code {
            1 => "VMCALL executed in VMX root operation",
            2 => "VMCLEAR with invalid physical address",
            3 => "VMCLEAR with VMXON pointer",
            4 => "VMLAUNCH with non-clear VMCS",
            5 => "VMRESUME with non-launched VMCS",
            6 => "VMRESUME after VMXOFF",
            7 => "VM entry with invalid control field(s)",
            8 => "VM entry with invalid host-state field(s)",
            9 => "VMPTRLD with invalid physical address",
            10 => "VMPTRLD with VMXON pointer",
            11 => "VMPTRLD with incorrect VMCS revision identifier",
            12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
            13 => "VMWRITE to read-only VMCS component",
            15 => "VMXON executed in VMX root operation",
            16 => "VM entry with invalid executive-VMCS pointer",
            17 => "VM entry with non-launched executive VMCS",
            18 => "VM entry with executive-VMCS pointer not VMXON pointer",
            19 => "VMCALL with non-clear VMCS",
            20 => "VMCALL with invalid VM-exit control fields",
            22 => "VMCALL with incorrect MSEG revision identifier",
            23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
            24 => "VMCALL with invalid SMM-monitor features",
            25 => "VM entry with invalid VM-execution control fields in executive VMCS",
            26 => "VM entry with events blocked by MOV SS",
            28 => "invalid operand to INVEPT/INVVPID",
            _ => "unknown VM-instruction error",
        }
    }
}

/// Pin-based VM-execution controls (VMCS `PIN_CONTROLS`).
pub mod pin {
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
    pub const POSTED_INTERRUPTS: u32 = 1 << 7;

    /// The control's name, for refusals and log lines.
    pub fn name(bit: u32) -> &'static str {
        match 1u32.checked_shl(bit).unwrap_or(0) {
            EXTERNAL_INTERRUPT_EXITING => "external-interrupt exiting",
            NMI_EXITING => "NMI exiting",
            VIRTUAL_NMIS => "virtual NMIs",
            PREEMPTION_TIMER => "activate VMX-preemption timer",
            POSTED_INTERRUPTS => "process posted interrupts",
            _ => "reserved",
        }
    }
}

/// Primary processor-based VM-execution controls (VMCS `PROC_CONTROLS`).
pub mod proc {
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const INVLPG_EXITING: u32 = 1 << 9;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDPMC_EXITING: u32 = 1 << 11;
    pub const RDTSC_EXITING: u32 = 1 << 12;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    pub const PAUSE_EXITING: u32 = 1 << 30;
    pub const ACTIVATE_SECONDARY: u32 = 1 << 31;

    /// The control's name, for refusals and log lines.
    pub fn name(bit: u32) -> &'static str {
        match 1u32.checked_shl(bit).unwrap_or(0) {
            INTERRUPT_WINDOW_EXITING => "interrupt-window exiting",
            USE_TSC_OFFSETTING => "use TSC offsetting",
            HLT_EXITING => "HLT exiting",
            INVLPG_EXITING => "INVLPG exiting",
            MWAIT_EXITING => "MWAIT exiting",
            RDPMC_EXITING => "RDPMC exiting",
            RDTSC_EXITING => "RDTSC exiting",
            CR3_LOAD_EXITING => "CR3-load exiting",
            CR3_STORE_EXITING => "CR3-store exiting",
            CR8_LOAD_EXITING => "CR8-load exiting",
            CR8_STORE_EXITING => "CR8-store exiting",
            USE_TPR_SHADOW => "use TPR shadow",
            NMI_WINDOW_EXITING => "NMI-window exiting",
            MOV_DR_EXITING => "MOV-DR exiting",
            UNCONDITIONAL_IO_EXITING => "unconditional I/O exiting",
            USE_IO_BITMAPS => "use I/O bitmaps",
            MONITOR_TRAP_FLAG => "monitor trap flag",
            USE_MSR_BITMAPS => "use MSR bitmaps",
            MONITOR_EXITING => "MONITOR exiting",
            PAUSE_EXITING => "PAUSE exiting",
            ACTIVATE_SECONDARY => "activate secondary controls",
            _ => "reserved",
        }
    }
}

/// Secondary processor-based VM-execution controls
/// (VMCS `SECONDARY_PROC_CONTROLS`).
pub mod proc2 {
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const DESCRIPTOR_TABLE_EXITING: u32 = 1 << 2;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const VIRTUALIZE_X2APIC: u32 = 1 << 4;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const WBINVD_EXITING: u32 = 1 << 6;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const PAUSE_LOOP_EXITING: u32 = 1 << 10;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    pub const ENABLE_XSAVES: u32 = 1 << 20;

    /// The control's name, for refusals and log lines.
    pub fn name(bit: u32) -> &'static str {
        match 1u32.checked_shl(bit).unwrap_or(0) {
            VIRTUALIZE_APIC_ACCESSES => "virtualize APIC accesses",
            ENABLE_EPT => "enable EPT",
            DESCRIPTOR_TABLE_EXITING => "descriptor-table exiting",
            ENABLE_RDTSCP => "enable RDTSCP",
            VIRTUALIZE_X2APIC => "virtualize x2APIC mode",
            ENABLE_VPID => "enable VPID",
            WBINVD_EXITING => "WBINVD exiting",
            UNRESTRICTED_GUEST => "unrestricted guest",
            PAUSE_LOOP_EXITING => "PAUSE-loop exiting",
            ENABLE_INVPCID => "enable INVPCID",
            ENABLE_XSAVES => "enable XSAVES/XRSTORS",
            _ => "unnamed secondary control",
        }
    }
}

/// VM-exit controls (VMCS `EXIT_CONTROLS`); `_ctl` because [`exit`]
/// holds the exit reasons.
pub mod exit_ctl {
    pub const SAVE_DEBUG: u32 = 1 << 2;
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 12;
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;

    /// The control's name, for refusals and log lines.
    pub fn name(bit: u32) -> &'static str {
        match 1u32.checked_shl(bit).unwrap_or(0) {
            SAVE_DEBUG => "save debug controls",
            HOST_ADDRESS_SPACE_SIZE => "host address-space size",
            LOAD_PERF_GLOBAL_CTRL => "load IA32_PERF_GLOBAL_CTRL",
            ACK_INTERRUPT_ON_EXIT => "acknowledge interrupt on exit",
            SAVE_PAT => "save IA32_PAT",
            LOAD_PAT => "load IA32_PAT",
            SAVE_EFER => "save IA32_EFER",
            LOAD_EFER => "load IA32_EFER",
            SAVE_PREEMPTION_TIMER => "save VMX-preemption timer value",
            _ => "unnamed VM-exit control",
        }
    }
}

/// VM-entry controls (VMCS `ENTRY_CONTROLS`).
pub mod entry {
    pub const LOAD_DEBUG: u32 = 1 << 2;
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    pub const DEACTIVATE_DUAL_MONITOR: u32 = 1 << 11;
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 13;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;

    /// The control's name, for refusals and log lines.
    pub fn name(bit: u32) -> &'static str {
        match 1u32.checked_shl(bit).unwrap_or(0) {
            LOAD_DEBUG => "load debug controls",
            IA32E_MODE_GUEST => "IA-32e mode guest",
            ENTRY_TO_SMM => "entry to SMM",
            DEACTIVATE_DUAL_MONITOR => "deactivate dual-monitor treatment",
            LOAD_PERF_GLOBAL_CTRL => "load IA32_PERF_GLOBAL_CTRL",
            LOAD_PAT => "load IA32_PAT",
            LOAD_EFER => "load IA32_EFER",
            _ => "unnamed VM-entry control",
        }
    }
}

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.VMXE: must stay set in the real CR4 while in VMX operation.
pub const CR4_VMXE: u64 = 1 << 13;

const BASIC_REVISION_MASK: u64 = 0x7FFF_FFFF;
const BASIC_ADDRESS_WIDTH_32: u64 = 1 << 48;
const BASIC_TRUE_CONTROLS: u64 = 1 << 55;
const BASIC_ANY_ERROR_CODE: u64 = 1 << 56;
/// The VMCS memory type the SDM defines besides UC; we require it.
const MEMORY_TYPE_WB: u8 = 6;
/// The largest VMCS region the SDM allows (bits 44:32 of VMX_BASIC).
pub const MAX_VMCS_SIZE: u32 = 4096;

/// IA32_FEATURE_CONTROL as firmware left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureControl {
    pub raw: u64,
    pub locked: bool,
    pub vmxon_outside_smx: bool,
}

impl FeatureControl {
    pub fn decode(raw: u64) -> FeatureControl {
        FeatureControl {
            raw,
            locked: raw & msr::FEATURE_CONTROL_LOCK != 0,
            vmxon_outside_smx: raw & msr::FEATURE_CONTROL_VMXON_OUTSIDE_SMX != 0,
        }
    }

    /// The value the binary must write before VMXON, or `None` when firmware
    /// already locked it (with VMX allowed: [`Caps::read`] refuses otherwise).
    /// Locking is what makes VMXON legal; unlocked, VMXON raises #GP.
    pub fn value_to_write(&self) -> Option<u64> {
        if self.locked {
            None
        } else {
            Some(self.raw | msr::FEATURE_CONTROL_LOCK | msr::FEATURE_CONTROL_VMXON_OUTSIDE_SMX)
        }
    }
}

/// IA32_VMX_MISC, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Misc {
    pub raw: u64,
    /// The preemption timer counts down once every 2^rate TSC ticks.
    pub preemption_timer_rate: u8,
    /// VM exits store EFER.LMA into the "IA-32e mode guest" entry control;
    /// an unrestricted guest that switches to long mode relies on it.
    pub stores_lma: bool,
    pub activity_hlt: bool,
    pub activity_shutdown: bool,
    pub activity_wait_for_sipi: bool,
    pub cr3_targets: u16,
    /// Most entries recommended in an MSR load/store list.
    pub max_msr_list: u32,
    /// VMWRITE may write the read-only exit-information fields.
    pub vmwrite_any_field: bool,
    /// Event injection with instruction length 0 is allowed.
    pub zero_length_injection: bool,
}

impl Misc {
    pub fn decode(raw: u64) -> Misc {
        let bit = |n: u32| raw >> n & 1 != 0;
        Misc {
            raw,
            preemption_timer_rate: (raw & 0x1F) as u8,
            stores_lma: bit(5),
            activity_hlt: bit(6),
            activity_shutdown: bit(7),
            activity_wait_for_sipi: bit(8),
            cr3_targets: (raw >> 16 & 0x1FF) as u16,
            max_msr_list: 512 * ((raw >> 25 & 0x7) as u32 + 1),
            vmwrite_any_field: bit(29),
            zero_length_injection: bit(30),
        }
    }
}

/// IA32_VMX_EPT_VPID_CAP, decoded (all false when the MSR is absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptVpidCaps {
    pub raw: u64,
    pub execute_only: bool,
    pub walk_4level: bool,
    pub uncacheable: bool,
    pub write_back: bool,
    pub pages_2mib: bool,
    pub pages_1gib: bool,
    pub invept: bool,
    pub accessed_dirty: bool,
    pub invept_single_context: bool,
    pub invept_all_context: bool,
    pub invvpid: bool,
    pub invvpid_individual_address: bool,
    pub invvpid_single_context: bool,
    pub invvpid_all_context: bool,
    pub invvpid_single_context_retaining_globals: bool,
}

impl EptVpidCaps {
    pub fn decode(raw: u64) -> EptVpidCaps {
        let bit = |n: u32| raw >> n & 1 != 0;
        EptVpidCaps {
            raw,
            execute_only: bit(0),
            walk_4level: bit(6),
            uncacheable: bit(8),
            write_back: bit(14),
            pages_2mib: bit(16),
            pages_1gib: bit(17),
            invept: bit(20),
            accessed_dirty: bit(21),
            invept_single_context: bit(25),
            invept_all_context: bit(26),
            invvpid: bit(32),
            invvpid_individual_address: bit(40),
            invvpid_single_context: bit(41),
            invvpid_all_context: bit(42),
            invvpid_single_context_retaining_globals: bit(43),
        }
    }
}

/// What the CPU's VMX offers, read from its capability MSRs.
///
/// Each control pair is (allowed-0, allowed-1) as the MSR holds it: a bit
/// set in allowed-0 must be 1, a bit clear in allowed-1 must be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// VMCS revision identifier, written at the start of VMXON and VMCS regions.
    pub revision: u32,
    /// Bytes to allocate for a VMXON or VMCS region (1..=4096).
    pub vmcs_size: u32,
    /// The TRUE_* MSRs were used: default-1 controls may be cleared.
    pub true_controls: bool,
    /// VMX_BASIC bit 56: hardware exceptions may be injected with or without
    /// an error code whatever their vector.
    pub any_error_code: bool,
    pub pin: (u32, u32),
    pub proc: (u32, u32),
    /// (0, 0) when the CPU has no secondary controls.
    pub proc2: (u32, u32),
    pub exit: (u32, u32),
    pub entry: (u32, u32),
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub misc: Misc,
    pub ept_vpid: EptVpidCaps,
    pub feature_control: FeatureControl,
}

/// Why this hypervisor cannot run guests with VMX on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoVmx,
    /// IA32_FEATURE_CONTROL is locked with VMXON outside SMX disallowed.
    DisabledByFirmware,
    /// An MSR that should exist could not be read.
    MissingMsr(u32),
    /// VMX_BASIC's VMCS region size is 0 or above 4096 bytes.
    VmcsSize(u32),
    /// VMX_BASIC's VMCS memory type (bits 53:50) is not write-back.
    NotWriteBack(u8),
    /// VMX_BASIC bit 48: VMX structures limited to 32-bit addresses.
    AddressWidth32,
    /// A control MSR demands as 1 a bit it does not allow as 1.
    InconsistentControls(u32),
    /// A CR fixed-0 MSR demands as 1 a bit its fixed-1 MSR forbids.
    InconsistentFixedBits(u32),
    /// A control we require is not in its allowed-1 settings.
    ControlUnavailable {
        word: &'static str,
        bit: u32,
        name: &'static str,
    },
    /// A control we cannot run with is in its allowed-0 settings.
    ControlForced {
        word: &'static str,
        bit: u32,
        name: &'static str,
    },
    NoEpt,
    EptNo4Level,
    EptNoWriteBack,
    NoInvept,
    NoUnrestrictedGuest,
    /// Unrestricted guest without VM exits storing EFER.LMA.
    NoLmaStore,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoVmx => f.write_str("this CPU has no VMX (CPUID.1:ECX bit 5 is clear)"),
            Self::DisabledByFirmware => f.write_str(
                "firmware locked IA32_FEATURE_CONTROL with VMX outside SMX disabled \
                 (enable VT-x in the firmware setup)",
            ),
            Self::MissingMsr(index) => write!(
                f,
                "MSR {index:#x} could not be read although VMX reports it present"
            ),
            Self::VmcsSize(size) => write!(
                f,
                "IA32_VMX_BASIC reports a VMCS region of {size} bytes; 1 to {MAX_VMCS_SIZE} expected"
            ),
            Self::NotWriteBack(kind) => write!(
                f,
                "IA32_VMX_BASIC reports VMCS memory type {kind}; only write-back (6) is supported"
            ),
            Self::AddressWidth32 => f.write_str(
                "IA32_VMX_BASIC limits VMX structures to 32-bit physical addresses, \
                 which this 64-bit hypervisor does not support",
            ),
            Self::InconsistentControls(index) => write!(
                f,
                "VMX control MSR {index:#x} requires a control to be 1 that it does not allow to be 1"
            ),
            Self::InconsistentFixedBits(index) => write!(
                f,
                "VMX fixed-bit MSR {index:#x} requires a CR bit to be 1 that the fixed-1 MSR forbids"
            ),
            Self::ControlUnavailable { word, bit, name } => write!(
                f,
                "the {word} control '{name}' (bit {bit}) is required but this CPU does not allow it"
            ),
            Self::ControlForced { word, bit, name } => write!(
                f,
                "this CPU forces the {word} control '{name}' (bit {bit}), which guests cannot run with"
            ),
            Self::NoEpt => f.write_str("this CPU's VMX has no extended page tables (EPT)"),
            Self::EptNo4Level => f.write_str("this CPU's EPT does not support a 4-level page walk"),
            Self::EptNoWriteBack => {
                f.write_str("this CPU's EPT does not support write-back paging structures")
            }
            Self::NoInvept => f.write_str(
                "this CPU has no INVEPT with single-context or all-context invalidation",
            ),
            Self::NoUnrestrictedGuest => f.write_str(
                "this CPU's VMX has no unrestricted guest mode (guests start in real mode)",
            ),
            Self::NoLmaStore => f.write_str(
                "IA32_VMX_MISC bit 5 is clear: VM exits do not record the guest's EFER.LMA",
            ),
        }
    }
}

impl Caps {
    /// The preemption timer counts down once every 2^shift TSC ticks.
    pub fn preemption_timer_shift(&self) -> u32 {
        u32::from(self.misc.preemption_timer_rate)
    }

    /// Reads the capability MSRs in dependency order: an MSR is asked for
    /// only when the bits read before say it exists.
    pub fn read(cpuid_vmx: bool, rdmsr: impl Fn(u32) -> Option<u64>) -> Result<Caps, Refusal> {
        if !cpuid_vmx {
            return Err(Refusal::NoVmx);
        }
        let get = |index: u32| rdmsr(index).ok_or(Refusal::MissingMsr(index));
        let get_pair = |index: u32| {
            let raw = get(index)?;
            let pair = (raw as u32, (raw >> 32) as u32);
            if pair.0 & !pair.1 != 0 {
                return Err(Refusal::InconsistentControls(index));
            }
            Ok(pair)
        };
        let get_fixed = |index0: u32, index1: u32| {
            let (fixed0, fixed1) = (get(index0)?, get(index1)?);
            if fixed0 & !fixed1 != 0 {
                return Err(Refusal::InconsistentFixedBits(index0));
            }
            Ok((fixed0, fixed1))
        };

        let feature_control = FeatureControl::decode(get(msr::IA32_FEATURE_CONTROL)?);
        if feature_control.locked && !feature_control.vmxon_outside_smx {
            return Err(Refusal::DisabledByFirmware);
        }

        let basic = get(msr::IA32_VMX_BASIC)?;
        let vmcs_size = (basic >> 32 & 0x1FFF) as u32;
        if !(1..=MAX_VMCS_SIZE).contains(&vmcs_size) {
            return Err(Refusal::VmcsSize(vmcs_size));
        }
        if basic & BASIC_ADDRESS_WIDTH_32 != 0 {
            return Err(Refusal::AddressWidth32);
        }
        let memory_type = (basic >> 50 & 0xF) as u8;
        if memory_type != MEMORY_TYPE_WB {
            return Err(Refusal::NotWriteBack(memory_type));
        }
        let true_controls = basic & BASIC_TRUE_CONTROLS != 0;

        // With true controls the SDM says to use the TRUE_* MSRs: their
        // allowed-0 halves let default-1 controls be cleared.
        let (pin_msr, proc_msr, exit_msr, entry_msr) = if true_controls {
            (
                msr::IA32_VMX_TRUE_PINBASED_CTLS,
                msr::IA32_VMX_TRUE_PROCBASED_CTLS,
                msr::IA32_VMX_TRUE_EXIT_CTLS,
                msr::IA32_VMX_TRUE_ENTRY_CTLS,
            )
        } else {
            (
                msr::IA32_VMX_PINBASED_CTLS,
                msr::IA32_VMX_PROCBASED_CTLS,
                msr::IA32_VMX_EXIT_CTLS,
                msr::IA32_VMX_ENTRY_CTLS,
            )
        };
        let pin = get_pair(pin_msr)?;
        let proc = get_pair(proc_msr)?;
        let exit = get_pair(exit_msr)?;
        let entry = get_pair(entry_msr)?;
        let proc2 = if proc.1 & proc::ACTIVATE_SECONDARY != 0 {
            get_pair(msr::IA32_VMX_PROCBASED_CTLS2)?
        } else {
            (0, 0)
        };
        let ept_vpid = if proc2.1 & (proc2::ENABLE_EPT | proc2::ENABLE_VPID) != 0 {
            EptVpidCaps::decode(get(msr::IA32_VMX_EPT_VPID_CAP)?)
        } else {
            EptVpidCaps::decode(0)
        };
        let misc = Misc::decode(get(msr::IA32_VMX_MISC)?);
        let (cr0_fixed0, cr0_fixed1) =
            get_fixed(msr::IA32_VMX_CR0_FIXED0, msr::IA32_VMX_CR0_FIXED1)?;
        let (cr4_fixed0, cr4_fixed1) =
            get_fixed(msr::IA32_VMX_CR4_FIXED0, msr::IA32_VMX_CR4_FIXED1)?;

        Ok(Caps {
            revision: (basic & BASIC_REVISION_MASK) as u32,
            vmcs_size,
            true_controls,
            any_error_code: basic & BASIC_ANY_ERROR_CODE != 0,
            pin,
            proc,
            proc2,
            exit,
            entry,
            cr0_fixed0,
            cr0_fixed1,
            cr4_fixed0,
            cr4_fixed1,
            misc,
            ept_vpid,
            feature_control,
        })
    }
}

/// `want` adjusted to what the CPU allows: forced bits set, forbidden
/// bits cleared. Unchecked: a wanted bit may silently disappear.
pub fn adjust(pair: (u32, u32), want: u32) -> u32 {
    let (allowed0, allowed1) = pair;
    (want | allowed0) & allowed1
}

/// A bit that has to be 1 but is not in allowed-1: one we need, or one the
/// CPU itself demands through allowed-0 (a contradictory pair).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missing {
    /// The lowest such bit.
    pub bit: u32,
}

/// A control word with every `need` bit and every allowed `optional` bit
/// set, plus what the CPU forces; default-1 bits that allowed-0 leaves
/// free (true controls) stay clear unless asked for.
pub fn require(pair: (u32, u32), need: u32, optional: u32) -> Result<u32, Missing> {
    let (allowed0, allowed1) = pair;
    let missing = (need | allowed0) & !allowed1;
    if missing != 0 {
        return Err(Missing {
            bit: missing.trailing_zeros(),
        });
    }
    Ok(need | optional & allowed1 | allowed0)
}

/// Which optional features the caller would like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// PAUSE-loop exiting, so a spinning vCPU yields.
    pub ple: bool,
    /// The VMX-preemption timer, to bound a guest's time slice.
    pub preemption_timer: bool,
}

/// How INVEPT invalidates: its type operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InveptKind {
    /// Only the translations of one EPTP (preferred).
    SingleContext = 1,
    /// Every EPTP's translations.
    AllContext = 2,
}

/// How INVVPID invalidates: its type operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvvpidKind {
    /// Only the translations tagged with one VPID (preferred).
    SingleContext = 1,
    /// Every VPID's translations.
    AllContext = 2,
}

/// The control words guests run with and what follows from them.
///
/// Every guest I/O instruction exits ("unconditional I/O exiting", no I/O
/// bitmaps): nothing is passed through, and no bitmap page can be left
/// zeroed by mistake and so let ports through. RDMSR/WRMSR exit as the MSR
/// bitmap says (see [`msr_bitmap`]; start from [`msr_bitmap::intercept_all`]).
/// Without true controls the CPU forces CR3-load/store exiting: the binary
/// must then handle MOV CR3 exits (check `proc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
    /// VPIDs are used (INVVPID is available): write `field::VPID` non-zero.
    pub vpid: bool,
    /// How to flush VPID-tagged translations, when `vpid`.
    pub invvpid: Option<InvvpidKind>,
    /// PAUSE-loop exiting is on: write `PLE_GAP` and `PLE_WINDOW`.
    pub ple: bool,
    /// The preemption timer is on: write `PREEMPTION_TIMER_VALUE`; the
    /// remaining count is saved on exit when `exit` has
    /// `SAVE_PREEMPTION_TIMER`.
    pub preemption_timer: bool,
    pub invept: InveptKind,
    /// EPT 2 MiB leaves are supported (see `ept::Ept::with_2mib_leaves`).
    pub ept_2mib: bool,
    /// Guest CR0 bits that must be 1: PE and PG are free (unrestricted guest).
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    /// Guest CR4 bits that must be 1: includes VMXE, which the binary hides
    /// from the guest with the CR4 guest/host mask and read shadow.
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
}

impl Controls {
    /// `value` made acceptable as guest CR0 (still: PG=1 needs PE=1).
    pub fn guest_cr0(&self, value: u64) -> u64 {
        (value | self.cr0_fixed0) & self.cr0_fixed1
    }

    /// `value` made acceptable as guest CR4.
    pub fn guest_cr4(&self, value: u64) -> u64 {
        (value | self.cr4_fixed0) & self.cr4_fixed1
    }

    /// CR0 guest/host mask: the bits VMX fixes. The guest reads them from
    /// the read shadow, and writing them differently exits.
    pub fn guest_cr0_mask(&self) -> u64 {
        self.cr0_fixed0 | !self.cr0_fixed1
    }

    /// CR4 guest/host mask: every bit. The guest reads CR4 from the read
    /// shadow and every change exits, so a feature whose state the
    /// hypervisor does not switch between domains (OSXSAVE, PKE, CET)
    /// cannot be turned on behind its back.
    pub fn guest_cr4_mask(&self) -> u64 {
        u64::MAX
    }

    /// CR0 bits a guest may set in its own view.
    pub fn guest_cr0_allowed(&self) -> u64 {
        self.cr0_fixed1
    }

    /// CR4 bits a guest may set in its own view: those this CPU allows
    /// in VMX operation among the ones whose state is the guest's own or
    /// switched by the VMCS (VME, PVI, TSD, DE, PSE, PAE, MCE, PGE, PCE,
    /// OSFXSR, OSXMMEXCPT, UMIP, LA57, FSGSBASE, PCIDE, SMEP, SMAP). VMXE
    /// is the hypervisor's; OSXSAVE, PKE, CET and PKS would expose state
    /// nobody switches.
    pub fn guest_cr4_allowed(&self) -> u64 {
        const GUEST_OWNED: u64 =
            0x7ff | (1 << 11) | (1 << 12) | (1 << 16) | (1 << 17) | (1 << 20) | (1 << 21);
        self.cr4_fixed1 & GUEST_OWNED & !CR4_VMXE
    }
}

/// One control word's label and bit names, for refusals.
struct Word {
    label: &'static str,
    name: fn(u32) -> &'static str,
}

const PIN: Word = Word {
    label: "pin-based VM-execution",
    name: pin::name,
};
const PRIMARY: Word = Word {
    label: "primary processor-based VM-execution",
    name: proc::name,
};
const SECONDARY: Word = Word {
    label: "secondary processor-based VM-execution",
    name: proc2::name,
};
const EXIT: Word = Word {
    label: "VM-exit",
    name: exit_ctl::name,
};
const ENTRY: Word = Word {
    label: "VM-entry",
    name: entry::name,
};

/// [`require`], refusing also when the result has a `forbid` bit.
fn pick(
    word: &Word,
    pair: (u32, u32),
    need: u32,
    optional: u32,
    forbid: u32,
) -> Result<u32, Refusal> {
    let value = require(pair, need, optional).map_err(|m| Refusal::ControlUnavailable {
        word: word.label,
        bit: m.bit,
        name: (word.name)(m.bit),
    })?;
    let forced = value & forbid;
    if forced != 0 {
        let bit = forced.trailing_zeros();
        return Err(Refusal::ControlForced {
            word: word.label,
            bit,
            name: (word.name)(bit),
        });
    }
    Ok(value)
}

/// The controls guests run with on a CPU with `caps`.
///
/// Required: EPT with a 4-level walk, write-back tables and INVEPT;
/// unrestricted guest (guests start in real mode); external-interrupt and
/// NMI exiting; HLT, MWAIT, MONITOR, CR8 load/store and I/O exiting; MSR
/// bitmaps; EFER, PAT and debug registers switched on every entry and
/// exit; a 64-bit host. Used when offered: VPID (with INVVPID), RDTSCP and
/// INVPCID (so guests using them do not take #UD), WBINVD exiting,
/// acknowledge interrupt on exit, and what `want` asks for. XSAVES is not
/// asked for: XSAVE state is not switched, so it stays hidden.
pub fn compute(caps: &Caps, want: &Wanted) -> Result<Controls, Refusal> {
    let ept = &caps.ept_vpid;
    if caps.proc.1 & proc::ACTIVATE_SECONDARY == 0 || caps.proc2.1 & proc2::ENABLE_EPT == 0 {
        return Err(Refusal::NoEpt);
    }
    if !ept.walk_4level {
        return Err(Refusal::EptNo4Level);
    }
    if !ept.write_back {
        return Err(Refusal::EptNoWriteBack);
    }
    let invept = match (
        ept.invept,
        ept.invept_single_context,
        ept.invept_all_context,
    ) {
        (true, true, _) => InveptKind::SingleContext,
        (true, false, true) => InveptKind::AllContext,
        _ => return Err(Refusal::NoInvept),
    };
    if caps.proc2.1 & proc2::UNRESTRICTED_GUEST == 0 {
        return Err(Refusal::NoUnrestrictedGuest);
    }
    if !caps.misc.stores_lma {
        return Err(Refusal::NoLmaStore);
    }
    let invvpid = match (
        ept.invvpid,
        ept.invvpid_single_context,
        ept.invvpid_all_context,
    ) {
        (true, true, _) => Some(InvvpidKind::SingleContext),
        (true, false, true) => Some(InvvpidKind::AllContext),
        _ => None,
    };

    let timer = if want.preemption_timer {
        pin::PREEMPTION_TIMER
    } else {
        0
    };
    let pin = pick(
        &PIN,
        caps.pin,
        pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING,
        timer,
        0,
    )?;
    let proc = pick(
        &PRIMARY,
        caps.proc,
        // MWAIT/MONITOR: a native MWAIT could sleep the CPU with nothing
        // to wake it. CR8: the real TPR is the host's, shared by domains.
        proc::HLT_EXITING
            | proc::MWAIT_EXITING
            | proc::MONITOR_EXITING
            | proc::CR8_LOAD_EXITING
            | proc::CR8_STORE_EXITING
            | proc::UNCONDITIONAL_IO_EXITING
            | proc::USE_MSR_BITMAPS
            | proc::ACTIVATE_SECONDARY,
        0,
        0,
    )?;
    let mut optional2 = proc2::ENABLE_RDTSCP | proc2::ENABLE_INVPCID | proc2::WBINVD_EXITING;
    if invvpid.is_some() {
        optional2 |= proc2::ENABLE_VPID;
    }
    if want.ple {
        optional2 |= proc2::PAUSE_LOOP_EXITING;
    }
    // VPID without a way to flush it would keep stale translations.
    let forbid2 = if invvpid.is_none() {
        proc2::ENABLE_VPID
    } else {
        0
    };
    let proc2 = pick(
        &SECONDARY,
        caps.proc2,
        proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST,
        optional2,
        forbid2,
    )?;
    let preemption_timer = pin & pin::PREEMPTION_TIMER != 0;
    let save_timer = if preemption_timer {
        exit_ctl::SAVE_PREEMPTION_TIMER
    } else {
        0
    };
    let exit = pick(
        &EXIT,
        caps.exit,
        exit_ctl::HOST_ADDRESS_SPACE_SIZE
            | exit_ctl::SAVE_DEBUG
            | exit_ctl::SAVE_PAT
            | exit_ctl::LOAD_PAT
            | exit_ctl::SAVE_EFER
            | exit_ctl::LOAD_EFER,
        exit_ctl::ACK_INTERRUPT_ON_EXIT | save_timer,
        0,
    )?;
    // The guest starts in real mode: IA-32e mode at entry would fail it.
    let entry = pick(
        &ENTRY,
        caps.entry,
        entry::LOAD_DEBUG | entry::LOAD_PAT | entry::LOAD_EFER,
        0,
        entry::IA32E_MODE_GUEST | entry::ENTRY_TO_SMM | entry::DEACTIVATE_DUAL_MONITOR,
    )?;
    let vpid = proc2 & proc2::ENABLE_VPID != 0;

    Ok(Controls {
        pin,
        proc,
        proc2,
        exit,
        entry,
        vpid,
        invvpid: if vpid { invvpid } else { None },
        ple: proc2 & proc2::PAUSE_LOOP_EXITING != 0,
        preemption_timer,
        invept,
        ept_2mib: ept.pages_2mib,
        cr0_fixed0: caps.cr0_fixed0 & !(CR0_PE | CR0_PG),
        cr0_fixed1: caps.cr0_fixed1,
        cr4_fixed0: caps.cr4_fixed0,
        cr4_fixed1: caps.cr4_fixed1,
    })
}

/// The exit-reason field, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitReason {
    pub basic: u16,
    pub entry_failure: bool,
}

impl ExitReason {
    pub fn decode(raw: u32) -> ExitReason {
        ExitReason {
            basic: exit::basic(raw) as u16,
            entry_failure: exit::is_entry_failure(raw),
        }
    }
}

/// An exit qualification holding a value the SDM leaves undefined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QualError {
    /// I/O exit access-size field (bits 2:0) other than 0, 1 or 3.
    IoSize(u8),
}

impl fmt::Display for QualError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IoSize(code) => write!(
                f,
                "I/O exit qualification has access-size code {code}; only 0, 1 and 3 are defined"
            ),
        }
    }
}

/// Exit qualification of an I/O instruction exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoExit {
    pub port: u16,
    /// Bytes: 1, 2 or 4.
    pub size: u8,
    /// IN/INS rather than OUT/OUTS.
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    pub rep: bool,
    /// The port was an immediate operand rather than DX.
    pub immediate: bool,
}

impl IoExit {
    pub fn decode(qual: u64) -> Result<IoExit, QualError> {
        let size = match qual & 0x7 {
            0 => 1,
            1 => 2,
            3 => 4,
            code => return Err(QualError::IoSize(code as u8)),
        };
        Ok(IoExit {
            port: (qual >> 16 & 0xFFFF) as u16,
            size,
            input: qual & 1 << 3 != 0,
            string: qual & 1 << 4 != 0,
            rep: qual & 1 << 5 != 0,
            immediate: qual & 1 << 6 != 0,
        })
    }
}

/// Exit qualification of an EPT violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    /// The access was a data read.
    pub read: bool,
    /// The access was a data write.
    pub write: bool,
    /// The access was an instruction fetch.
    pub fetch: bool,
    /// The translation allowed reads (false when nothing is mapped).
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// `GUEST_LINEAR_ADDRESS` holds the linear address accessed.
    pub gla_valid: bool,
    /// With `gla_valid`: the access was to the translated address itself,
    /// not to a guest paging-structure entry.
    pub translated_access: bool,
    /// The exit happened while IRET was unblocking NMIs: re-block them
    /// before resuming.
    pub nmi_unblocking: bool,
}

impl EptViolation {
    pub fn decode(qual: u64) -> EptViolation {
        let bit = |n: u32| qual >> n & 1 != 0;
        EptViolation {
            read: bit(0),
            write: bit(1),
            fetch: bit(2),
            readable: bit(3),
            writable: bit(4),
            executable: bit(5),
            gla_valid: bit(7),
            translated_access: bit(8),
            nmi_unblocking: bit(12),
        }
    }
}

/// Which instruction touched a control register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccessType {
    MovTo,
    MovFrom,
    Clts,
    Lmsw,
}

/// Exit qualification of a control-register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrAccess {
    /// 0, 3, 4 or 8 from a real CPU; others are the handler's to refuse.
    pub cr: u8,
    pub access: CrAccessType,
    /// For MOV: the general register, 0 = RAX .. 15 = R15 (4 = RSP, which
    /// lives in the VMCS, not in the saved registers).
    pub gpr: u8,
    /// For LMSW: the operand was in memory.
    pub lmsw_memory: bool,
    /// For LMSW: the source operand.
    pub lmsw_source: u16,
}

impl CrAccess {
    pub fn decode(qual: u64) -> CrAccess {
        CrAccess {
            cr: (qual & 0xF) as u8,
            access: match qual >> 4 & 0x3 {
                0 => CrAccessType::MovTo,
                1 => CrAccessType::MovFrom,
                2 => CrAccessType::Clts,
                _ => CrAccessType::Lmsw,
            },
            gpr: (qual >> 8 & 0xF) as u8,
            lmsw_memory: qual & 1 << 6 != 0,
            lmsw_source: (qual >> 16 & 0xFFFF) as u16,
        }
    }
}

/// Interruption type, bits 10:8 of every interruption-information field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    External = 0,
    Reserved = 1,
    Nmi = 2,
    HardwareException = 3,
    SoftwareInterrupt = 4,
    PrivilegedSoftwareException = 5,
    SoftwareException = 6,
    Other = 7,
}

const INFO_VALID: u32 = 1 << 31;
const INFO_ERROR_CODE: u32 = 1 << 11;
const INFO_NMI_UNBLOCKING: u32 = 1 << 12;

/// A VM-exit interruption-information or IDT-vectoring-information field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventInfo {
    pub vector: u8,
    pub kind: EventType,
    /// The matching error-code field holds the event's error code.
    pub error_code_valid: bool,
    /// Exit-interruption info only: NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl EventInfo {
    /// `None` when the valid bit is clear (no event).
    pub fn decode(raw: u32) -> Option<EventInfo> {
        if raw & INFO_VALID == 0 {
            return None;
        }
        Some(EventInfo {
            vector: raw as u8,
            kind: match raw >> 8 & 0x7 {
                0 => EventType::External,
                1 => EventType::Reserved,
                2 => EventType::Nmi,
                3 => EventType::HardwareException,
                4 => EventType::SoftwareInterrupt,
                5 => EventType::PrivilegedSoftwareException,
                6 => EventType::SoftwareException,
                _ => EventType::Other,
            },
            error_code_valid: raw & INFO_ERROR_CODE != 0,
            nmi_unblocking: raw & INFO_NMI_UNBLOCKING != 0,
        })
    }
}

/// Whether a protected-mode hardware exception with this vector pushes an
/// error code and so must be injected with one (#DF, #TS, #NP, #SS, #GP,
/// #PF, #AC).
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

/// An injection the VM-entry checks would reject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadInjection {
    /// A hardware exception vector above 31.
    VectorOutOfRange(u8),
    /// An error code for a guest with CR0.PE clear (real mode pushes none).
    ErrorCodeInRealMode,
    /// An error code for a vector that pushes none.
    UnexpectedErrorCode(u8),
    /// No error code for a vector that pushes one.
    MissingErrorCode(u8),
}

impl fmt::Display for BadInjection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::VectorOutOfRange(v) => {
                write!(f, "hardware exception vector {v} is above 31")
            }
            Self::ErrorCodeInRealMode => {
                f.write_str("an error code cannot be delivered to a guest with CR0.PE clear")
            }
            Self::UnexpectedErrorCode(v) => {
                write!(f, "exception vector {v} does not take an error code")
            }
            Self::MissingErrorCode(v) => {
                write!(
                    f,
                    "exception vector {v} needs an error code in protected mode"
                )
            }
        }
    }
}

/// An event to inject at the next VM entry: `.0` is the value for
/// `VM_ENTRY_INTR_INFO`. When it delivers an error code, the caller writes
/// the code to `ENTRY_EXCEPTION_ERROR_CODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntrInfo(pub u32);

impl IntrInfo {
    const fn new(vector: u8, kind: EventType, error_code: bool) -> IntrInfo {
        let deliver = if error_code { INFO_ERROR_CODE } else { 0 };
        IntrInfo(INFO_VALID | deliver | (kind as u32) << 8 | vector as u32)
    }

    /// An external interrupt.
    pub const fn external(vector: u8) -> IntrInfo {
        Self::new(vector, EventType::External, false)
    }

    /// A non-maskable interrupt (vector 2).
    pub const fn nmi() -> IntrInfo {
        Self::new(2, EventType::Nmi, false)
    }

    /// A hardware exception (#GP, #PF, #UD ...), delivering an error code
    /// when `error_code` has one (its value is the caller's to write).
    /// See [`IntrInfo::check`].
    pub const fn hardware_exception(vector: u8, error_code: Option<u32>) -> IntrInfo {
        Self::new(vector, EventType::HardwareException, error_code.is_some())
    }

    /// A software interrupt (INT n): also write `ENTRY_INSTRUCTION_LEN`.
    pub const fn software_interrupt(vector: u8) -> IntrInfo {
        Self::new(vector, EventType::SoftwareInterrupt, false)
    }

    /// The same event without its error code, as a real-mode guest takes it.
    pub const fn for_real_mode(self) -> IntrInfo {
        IntrInfo(self.0 & !INFO_ERROR_CODE)
    }

    /// Whether an error code is delivered with the event.
    pub const fn delivers_error_code(self) -> bool {
        self.0 & INFO_ERROR_CODE != 0
    }

    /// The SDM's VM-entry checks on this event for a guest whose CR0.PE is
    /// `protected_mode`; `any_error_code` is [`Caps::any_error_code`].
    pub fn check(self, protected_mode: bool, any_error_code: bool) -> Result<(), BadInjection> {
        let vector = self.0 as u8;
        let hardware = self.0 >> 8 & 0x7 == EventType::HardwareException as u32;
        let has_code = self.delivers_error_code();
        if hardware && vector > 31 {
            return Err(BadInjection::VectorOutOfRange(vector));
        }
        if has_code && !protected_mode {
            return Err(BadInjection::ErrorCodeInRealMode);
        }
        if has_code && !(hardware && (any_error_code || exception_has_error_code(vector))) {
            return Err(BadInjection::UnexpectedErrorCode(vector));
        }
        if hardware
            && protected_mode
            && !any_error_code
            && exception_has_error_code(vector)
            && !has_code
        {
            return Err(BadInjection::MissingErrorCode(vector));
        }
        Ok(())
    }
}

/// The 4 KiB MSR bitmap: which RDMSR/WRMSR exit.
///
/// A set bit makes the access exit. It covers MSRs 0..=0x1FFF and
/// 0xC000_0000..=0xC000_1FFF; any other MSR always exits.
pub mod msr_bitmap {
    use core::fmt;

    pub const SIZE: usize = 4096;
    const RANGE_LEN: u32 = 0x2000;
    const HIGH_BASE: u32 = 0xC000_0000;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Access {
        Read,
        Write,
    }

    /// The MSR is outside both ranges the bitmap covers (it always exits).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct NotCovered(pub u32);

    impl fmt::Display for NotCovered {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "MSR {:#x} is outside the ranges the MSR bitmap covers; it always exits",
                self.0
            )
        }
    }

    /// Byte and bit mask of `msr`'s bit for `access`.
    fn locate(msr: u32, access: Access) -> Option<(usize, u8)> {
        let (offset, index) = if msr < RANGE_LEN {
            (0, msr)
        } else {
            let high = msr.checked_sub(HIGH_BASE).filter(|i| *i < RANGE_LEN)?;
            (1024, high)
        };
        let base = match access {
            Access::Read => offset,
            Access::Write => offset + 2048,
        };
        Some((base + (index / 8) as usize, 1 << (index % 8)))
    }

    /// Every covered MSR exits: the safe starting point.
    pub fn intercept_all(page: &mut [u8; SIZE]) {
        page.fill(0xFF);
    }

    /// Sets whether `access` to `msr` exits.
    pub fn set(
        page: &mut [u8; SIZE],
        msr: u32,
        access: Access,
        intercept: bool,
    ) -> Result<(), NotCovered> {
        let (byte, mask) = locate(msr, access).ok_or(NotCovered(msr))?;
        let slot = page.get_mut(byte).ok_or(NotCovered(msr))?;
        if intercept {
            *slot |= mask;
        } else {
            *slot &= !mask;
        }
        Ok(())
    }

    /// Whether `access` to `msr` exits.
    pub fn intercepts(page: &[u8; SIZE], msr: u32, access: Access) -> bool {
        match locate(msr, access).and_then(|(byte, mask)| Some(page.get(byte)? & mask)) {
            Some(bit) => bit != 0,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Capability MSRs as a Haswell desktop part (Core i7-4770 class)
    /// reports them, with true controls; CR4_FIXED1 without SMAP.
    const BASIC: u64 = 0x00DA_0400_0000_0012;
    const PIN: u64 = 0x0000_007F_0000_0016;
    const PROC: u64 = 0xFFF9_FFFE_0401_E172;
    const EXIT: u64 = 0x007F_FFFF_0003_6DFF;
    const ENTRY: u64 = 0x0000_FFFF_0000_11FF;
    const MISC: u64 = 0x0000_0000_3004_81E5;
    const PROC2: u64 = 0x0000_37FF_0000_0000;
    const EPT_VPID: u64 = 0x0000_0F01_0673_4141;
    const TRUE_PIN: u64 = 0x0000_007F_0000_0016;
    const TRUE_PROC: u64 = 0xFFF9_FFFE_0400_6172;
    const TRUE_EXIT: u64 = 0x007F_FFFF_0003_6DFB;
    const TRUE_ENTRY: u64 = 0x0000_FFFF_0000_11FB;

    /// A fake rdmsr that remembers what was asked.
    struct Cpu {
        msrs: BTreeMap<u32, u64>,
        asked: RefCell<Vec<u32>>,
    }

    impl Cpu {
        fn haswell() -> Cpu {
            let msrs = [
                (msr::IA32_FEATURE_CONTROL, 0x5),
                (msr::IA32_VMX_BASIC, BASIC),
                (msr::IA32_VMX_PINBASED_CTLS, PIN),
                (msr::IA32_VMX_PROCBASED_CTLS, PROC),
                (msr::IA32_VMX_EXIT_CTLS, EXIT),
                (msr::IA32_VMX_ENTRY_CTLS, ENTRY),
                (msr::IA32_VMX_MISC, MISC),
                (msr::IA32_VMX_CR0_FIXED0, 0x8000_0021),
                (msr::IA32_VMX_CR0_FIXED1, 0xFFFF_FFFF),
                (msr::IA32_VMX_CR4_FIXED0, 0x2000),
                (msr::IA32_VMX_CR4_FIXED1, 0x0017_67FF),
                (msr::IA32_VMX_PROCBASED_CTLS2, PROC2),
                (msr::IA32_VMX_EPT_VPID_CAP, EPT_VPID),
                (msr::IA32_VMX_TRUE_PINBASED_CTLS, TRUE_PIN),
                (msr::IA32_VMX_TRUE_PROCBASED_CTLS, TRUE_PROC),
                (msr::IA32_VMX_TRUE_EXIT_CTLS, TRUE_EXIT),
                (msr::IA32_VMX_TRUE_ENTRY_CTLS, TRUE_ENTRY),
            ];
            Cpu {
                msrs: msrs.into_iter().collect(),
                asked: RefCell::new(Vec::new()),
            }
        }

        /// The same part without true controls (as before Nehalem's
        /// successors reported them): BASIC bit 55 clear, no TRUE_* MSRs.
        fn without_true_controls() -> Cpu {
            let mut cpu = Cpu::haswell();
            cpu.set(msr::IA32_VMX_BASIC, BASIC & !(1 << 55));
            for index in 0x48D..=0x490 {
                cpu.msrs.remove(&index);
            }
            cpu
        }

        fn set(&mut self, index: u32, value: u64) {
            self.msrs.insert(index, value);
        }

        /// Clears `bits` in the allowed-1 half of a control MSR.
        fn disallow(&mut self, index: u32, bits: u32) {
            let value = self.msrs[&index] & !(u64::from(bits) << 32);
            self.set(index, value);
        }

        /// Sets `bits` in both halves: the CPU forces them.
        fn force(&mut self, index: u32, bits: u32) {
            let value = self.msrs[&index] | u64::from(bits) << 32 | u64::from(bits);
            self.set(index, value);
        }

        fn caps(&self) -> Result<Caps, Refusal> {
            Caps::read(true, |index| {
                self.asked.borrow_mut().push(index);
                self.msrs.get(&index).copied()
            })
        }

        fn controls(&self, want: Wanted) -> Result<Controls, Refusal> {
            compute(&self.caps()?, &want)
        }

        fn asked(&self, index: u32) -> bool {
            self.asked.borrow().contains(&index)
        }
    }

    #[test]
    fn haswell_caps_are_read_from_the_true_msrs() {
        let cpu = Cpu::haswell();
        let caps = cpu.caps().unwrap();
        assert_eq!(caps.revision, 0x12);
        assert_eq!(caps.vmcs_size, 0x400);
        assert!(caps.true_controls);
        assert!(!caps.any_error_code);
        assert_eq!(caps.pin, (0x16, 0x7F));
        assert_eq!(caps.proc, (0x0400_6172, 0xFFF9_FFFE));
        assert_eq!(caps.exit, (0x0003_6DFB, 0x007F_FFFF));
        assert_eq!(caps.entry, (0x11FB, 0xFFFF));
        assert_eq!(caps.proc2, (0, 0x37FF));
        assert_eq!(
            (caps.cr0_fixed0, caps.cr0_fixed1),
            (0x8000_0021, 0xFFFF_FFFF)
        );
        assert_eq!((caps.cr4_fixed0, caps.cr4_fixed1), (0x2000, 0x0017_67FF));
        assert_eq!(
            caps.feature_control,
            FeatureControl {
                raw: 5,
                locked: true,
                vmxon_outside_smx: true
            }
        );
        for plain in [0x481, 0x482, 0x483, 0x484] {
            assert!(!cpu.asked(plain), "plain control MSR {plain:#x} read");
        }
    }

    #[test]
    fn misc_and_ept_vpid_caps_decode_every_field() {
        let caps = Cpu::haswell().caps().unwrap();
        assert_eq!(
            caps.misc,
            Misc {
                raw: MISC,
                preemption_timer_rate: 5,
                stores_lma: true,
                activity_hlt: true,
                activity_shutdown: true,
                activity_wait_for_sipi: true,
                cr3_targets: 4,
                max_msr_list: 512,
                vmwrite_any_field: true,
                zero_length_injection: false,
            }
        );
        let e = caps.ept_vpid;
        assert!(e.execute_only && e.walk_4level && e.uncacheable && e.write_back);
        assert!(e.pages_2mib && e.pages_1gib && e.invept && e.accessed_dirty);
        assert!(e.invept_single_context && e.invept_all_context);
        assert!(e.invvpid && e.invvpid_individual_address && e.invvpid_single_context);
        assert!(e.invvpid_all_context && e.invvpid_single_context_retaining_globals);
        // Each bit on its own lands in its own field.
        let one = |bit: u32| EptVpidCaps::decode(1 << bit);
        assert!(one(6).walk_4level && !one(6).execute_only);
        assert!(one(14).write_back && !one(14).uncacheable);
        assert!(one(26).invept_all_context && !one(26).invept_single_context);
        assert!(one(43).invvpid_single_context_retaining_globals && !one(43).invvpid);
        assert_eq!(
            EptVpidCaps::decode(0),
            EptVpidCaps {
                raw: 0,
                ..EptVpidCaps::decode(1 << 63)
            }
        );
        assert_eq!(Misc::decode(7 << 25).max_msr_list, 4096);
    }

    #[test]
    fn without_true_controls_the_plain_msrs_are_used_and_true_ones_never_read() {
        let cpu = Cpu::without_true_controls();
        let caps = cpu.caps().unwrap();
        assert!(!caps.true_controls);
        assert_eq!(caps.proc, (0x0401_E172, 0xFFF9_FFFE));
        assert_eq!(caps.exit, (0x0003_6DFF, 0x007F_FFFF));
        for index in 0x48D..=0x490 {
            assert!(!cpu.asked(index));
        }
    }

    #[test]
    fn secondary_and_ept_msrs_are_read_only_when_announced() {
        // No secondary controls: PROCBASED_CTLS2 and EPT_VPID_CAP stay unread.
        let mut cpu = Cpu::haswell();
        cpu.disallow(msr::IA32_VMX_TRUE_PROCBASED_CTLS, proc::ACTIVATE_SECONDARY);
        cpu.msrs.remove(&msr::IA32_VMX_PROCBASED_CTLS2);
        cpu.msrs.remove(&msr::IA32_VMX_EPT_VPID_CAP);
        let caps = cpu.caps().unwrap();
        assert_eq!(caps.proc2, (0, 0));
        assert_eq!(caps.ept_vpid, EptVpidCaps::decode(0));
        assert!(!cpu.asked(msr::IA32_VMX_PROCBASED_CTLS2));
        assert!(!cpu.asked(msr::IA32_VMX_EPT_VPID_CAP));
        assert_eq!(compute(&caps, &Wanted::default()), Err(Refusal::NoEpt));

        // Secondary controls without EPT or VPID: no EPT_VPID_CAP read.
        let mut cpu = Cpu::haswell();
        cpu.disallow(
            msr::IA32_VMX_PROCBASED_CTLS2,
            proc2::ENABLE_EPT | proc2::ENABLE_VPID,
        );
        cpu.msrs.remove(&msr::IA32_VMX_EPT_VPID_CAP);
        assert!(cpu.caps().is_ok());
        assert!(!cpu.asked(msr::IA32_VMX_EPT_VPID_CAP));

        // VPID alone announces the MSR.
        let mut cpu = Cpu::haswell();
        cpu.disallow(msr::IA32_VMX_PROCBASED_CTLS2, proc2::ENABLE_EPT);
        cpu.msrs.remove(&msr::IA32_VMX_EPT_VPID_CAP);
        assert_eq!(
            cpu.caps(),
            Err(Refusal::MissingMsr(msr::IA32_VMX_EPT_VPID_CAP))
        );
    }

    #[test]
    fn read_refusals() {
        assert_eq!(Caps::read(false, |_| Some(0)), Err(Refusal::NoVmx));

        let refuse = |index: u32, value: Option<u64>| {
            let mut cpu = Cpu::haswell();
            match value {
                Some(v) => cpu.set(index, v),
                None => {
                    cpu.msrs.remove(&index);
                }
            }
            cpu.caps().unwrap_err()
        };
        assert_eq!(
            refuse(msr::IA32_FEATURE_CONTROL, None),
            Refusal::MissingMsr(0x3A)
        );
        assert_eq!(
            refuse(msr::IA32_FEATURE_CONTROL, Some(0x1)),
            Refusal::DisabledByFirmware
        );
        // Locked with only SMX VMXON is still disabled for us.
        assert_eq!(
            refuse(msr::IA32_FEATURE_CONTROL, Some(0x3)),
            Refusal::DisabledByFirmware
        );
        assert_eq!(
            refuse(msr::IA32_VMX_BASIC, None),
            Refusal::MissingMsr(0x480)
        );
        let basic_size = |size: u64| (BASIC & !(0x1FFF << 32)) | size << 32;
        assert_eq!(
            refuse(msr::IA32_VMX_BASIC, Some(basic_size(0))),
            Refusal::VmcsSize(0)
        );
        assert_eq!(
            refuse(msr::IA32_VMX_BASIC, Some(basic_size(4097))),
            Refusal::VmcsSize(4097)
        );
        assert_eq!(
            refuse(msr::IA32_VMX_BASIC, Some(BASIC | 1 << 48)),
            Refusal::AddressWidth32
        );
        assert_eq!(
            refuse(msr::IA32_VMX_BASIC, Some(BASIC & !(0xF << 50))),
            Refusal::NotWriteBack(0)
        );
        assert_eq!(
            refuse(msr::IA32_VMX_TRUE_PINBASED_CTLS, None),
            Refusal::MissingMsr(0x48D)
        );
        // Allowed-0 demands bit 0 that allowed-1 forbids.
        assert_eq!(
            refuse(msr::IA32_VMX_TRUE_EXIT_CTLS, Some(TRUE_EXIT & !(1 << 32))),
            Refusal::InconsistentControls(0x48F)
        );
        assert_eq!(
            refuse(msr::IA32_VMX_PROCBASED_CTLS2, Some(0x0000_37FE_0000_0001)),
            Refusal::InconsistentControls(0x48B)
        );
        assert_eq!(refuse(msr::IA32_VMX_MISC, None), Refusal::MissingMsr(0x485));
        assert_eq!(
            refuse(msr::IA32_VMX_CR4_FIXED1, None),
            Refusal::MissingMsr(0x489)
        );
        assert_eq!(
            refuse(msr::IA32_VMX_CR0_FIXED1, Some(0x7FFF_FFFF)),
            Refusal::InconsistentFixedBits(0x486)
        );
        assert_eq!(
            refuse(msr::IA32_VMX_CR4_FIXED1, Some(0x1FFF)),
            Refusal::InconsistentFixedBits(0x488)
        );
    }

    #[test]
    fn the_largest_vmcs_is_accepted() {
        let mut cpu = Cpu::haswell();
        cpu.set(msr::IA32_VMX_BASIC, (BASIC & !(0x1FFF << 32)) | 4096 << 32);
        assert_eq!(cpu.caps().unwrap().vmcs_size, 4096);
    }

    #[test]
    fn unlocked_feature_control_is_accepted_and_says_what_to_write() {
        let mut cpu = Cpu::haswell();
        cpu.set(msr::IA32_FEATURE_CONTROL, 0x2);
        let fc = cpu.caps().unwrap().feature_control;
        assert!(!fc.locked);
        assert_eq!(fc.value_to_write(), Some(0x7));
        assert_eq!(FeatureControl::decode(0x5).value_to_write(), None);
        assert_eq!(FeatureControl::decode(0).value_to_write(), Some(0x5));
    }

    #[test]
    fn haswell_controls_with_true_controls() {
        let c = Cpu::haswell().controls(Wanted::default()).unwrap();
        assert_eq!(c.pin, 0x1F);
        // HLT (7), MWAIT (10), CR8 load/store (19, 20), unconditional I/O
        // (24), MSR bitmaps (28), MONITOR (29), secondary (31) and the
        // default-1 bits allowed-0 keeps (1, 4-6, 8, 13, 14, 26); CR3
        // load/store exiting (15, 16) cleared.
        assert_eq!(c.proc, 0xB518_65F2);
        // EPT, RDTSCP, VPID, WBINVD exiting, unrestricted guest, INVPCID.
        assert_eq!(c.proc2, 0x10EA);
        assert_eq!(c.exit, 0x003F_EFFF);
        assert_eq!(c.entry, 0xD1FF);
        assert!(c.vpid);
        assert_eq!(c.invvpid, Some(InvvpidKind::SingleContext));
        assert_eq!(c.invept, InveptKind::SingleContext);
        assert!(!c.ple && !c.preemption_timer);
        assert!(c.ept_2mib);
        assert_eq!(c.cr0_fixed0, 0x20);
        assert_eq!((c.cr4_fixed0, c.cr4_fixed1), (0x2000, 0x0017_67FF));
        assert_eq!(c.entry & entry::IA32E_MODE_GUEST, 0);
        assert_eq!(c.proc & proc::USE_IO_BITMAPS, 0);
    }

    #[test]
    fn default1_controls_are_forced_without_true_controls() {
        let c = Cpu::without_true_controls()
            .controls(Wanted::default())
            .unwrap();
        // The true-controls word plus CR3 load/store exiting (15, 16).
        assert_eq!(c.proc, 0xB519_E5F2);
        assert_ne!(c.proc & proc::CR3_LOAD_EXITING, 0);
        assert_ne!(c.proc & proc::CR3_STORE_EXITING, 0);
        assert_eq!(c.exit, 0x003F_EFFF);
        assert_eq!(c.entry, 0xD1FF);
    }

    #[test]
    fn wanted_features_are_used_when_offered() {
        let want = Wanted {
            ple: true,
            preemption_timer: true,
        };
        let c = Cpu::haswell().controls(want).unwrap();
        assert_eq!(c.pin, 0x5F);
        assert_eq!(c.proc2, 0x14EA);
        assert_eq!(c.exit, 0x007F_EFFF);
        assert!(c.ple && c.preemption_timer);
    }

    #[test]
    fn optional_controls_are_dropped_when_not_allowed() {
        let want = Wanted {
            ple: true,
            preemption_timer: true,
        };
        let mut cpu = Cpu::haswell();
        cpu.disallow(msr::IA32_VMX_TRUE_PINBASED_CTLS, pin::PREEMPTION_TIMER);
        cpu.disallow(
            msr::IA32_VMX_PROCBASED_CTLS2,
            proc2::PAUSE_LOOP_EXITING
                | proc2::ENABLE_RDTSCP
                | proc2::ENABLE_INVPCID
                | proc2::ENABLE_VPID
                | proc2::WBINVD_EXITING,
        );
        cpu.disallow(
            msr::IA32_VMX_TRUE_EXIT_CTLS,
            exit_ctl::ACK_INTERRUPT_ON_EXIT,
        );
        let c = cpu.controls(want).unwrap();
        assert_eq!(c.pin, 0x1F);
        assert_eq!(c.proc2, 0x82);
        // Neither acknowledge-on-exit nor the timer save without the timer.
        assert_eq!(c.exit, 0x003F_6FFF);
        assert!(!c.ple && !c.preemption_timer && !c.vpid);
        assert_eq!(c.invvpid, None);

        // XSAVES/XRSTORS is not asked for even when offered: guests get no
        // XSAVE state (OSXSAVE is never theirs).
        let mut cpu = Cpu::haswell();
        cpu.set(msr::IA32_VMX_PROCBASED_CTLS2, PROC2 | 1 << 52);
        let c = cpu.controls(Wanted::default()).unwrap();
        assert_eq!(c.proc2, 0x10EA);
        assert_eq!(c.proc2 & proc2::ENABLE_XSAVES, 0);
    }

    #[test]
    fn vpid_is_optional_and_follows_invvpid() {
        // No INVVPID at all: no VPID.
        let mut cpu = Cpu::haswell();
        cpu.set(msr::IA32_VMX_EPT_VPID_CAP, EPT_VPID & 0xFFFF_FFFF);
        let c = cpu.controls(Wanted::default()).unwrap();
        assert!(!c.vpid);
        assert_eq!(c.proc2 & proc2::ENABLE_VPID, 0);
        assert_eq!(c.invvpid, None);

        // INVVPID with only individual-address flushes is not enough.
        cpu.set(
            msr::IA32_VMX_EPT_VPID_CAP,
            EPT_VPID & 0xFFFF_FFFF | 1 << 32 | 1 << 40,
        );
        assert!(!cpu.controls(Wanted::default()).unwrap().vpid);

        // All-context only: used, and said so.
        cpu.set(
            msr::IA32_VMX_EPT_VPID_CAP,
            EPT_VPID & 0xFFFF_FFFF | 1 << 32 | 1 << 42,
        );
        let c = cpu.controls(Wanted::default()).unwrap();
        assert!(c.vpid);
        assert_eq!(c.invvpid, Some(InvvpidKind::AllContext));

        // A CPU forcing VPID without a way to flush it is refused.
        let mut cpu = Cpu::haswell();
        cpu.set(msr::IA32_VMX_EPT_VPID_CAP, EPT_VPID & 0xFFFF_FFFF);
        cpu.force(msr::IA32_VMX_PROCBASED_CTLS2, proc2::ENABLE_VPID);
        assert_eq!(
            cpu.controls(Wanted::default()),
            Err(Refusal::ControlForced {
                word: "secondary processor-based VM-execution",
                bit: 5,
                name: "enable VPID"
            })
        );
    }

    #[test]
    fn invept_prefers_single_context() {
        let mut cpu = Cpu::haswell();
        cpu.set(msr::IA32_VMX_EPT_VPID_CAP, EPT_VPID & !(1 << 25));
        assert_eq!(
            cpu.controls(Wanted::default()).unwrap().invept,
            InveptKind::AllContext
        );
        assert_eq!(InveptKind::SingleContext as u64, 1);
        assert_eq!(InveptKind::AllContext as u64, 2);
        assert_eq!(InvvpidKind::SingleContext as u64, 1);
        assert_eq!(InvvpidKind::AllContext as u64, 2);
    }

    #[test]
    fn ept_refusals() {
        let refuse = |change: &dyn Fn(&mut Cpu)| {
            let mut cpu = Cpu::haswell();
            change(&mut cpu);
            cpu.controls(Wanted::default()).unwrap_err()
        };
        assert_eq!(
            refuse(&|c| c.disallow(msr::IA32_VMX_PROCBASED_CTLS2, proc2::ENABLE_EPT)),
            Refusal::NoEpt
        );
        assert_eq!(
            refuse(&|c| c.set(msr::IA32_VMX_EPT_VPID_CAP, EPT_VPID & !(1 << 6))),
            Refusal::EptNo4Level
        );
        assert_eq!(
            refuse(&|c| c.set(msr::IA32_VMX_EPT_VPID_CAP, EPT_VPID & !(1 << 14))),
            Refusal::EptNoWriteBack
        );
        assert_eq!(
            refuse(&|c| c.set(msr::IA32_VMX_EPT_VPID_CAP, EPT_VPID & !(1 << 20))),
            Refusal::NoInvept
        );
        assert_eq!(
            refuse(&|c| c.set(msr::IA32_VMX_EPT_VPID_CAP, EPT_VPID & !(3 << 25))),
            Refusal::NoInvept
        );
        assert_eq!(
            refuse(&|c| c.disallow(msr::IA32_VMX_PROCBASED_CTLS2, proc2::UNRESTRICTED_GUEST)),
            Refusal::NoUnrestrictedGuest
        );
        assert_eq!(
            refuse(&|c| c.set(msr::IA32_VMX_MISC, MISC & !(1 << 5))),
            Refusal::NoLmaStore
        );
    }

    #[test]
    fn every_required_control_is_refused_by_name_when_missing() {
        let cases: [(u32, u32, &str, u32, &str); 17] = [
            (
                0x48E,
                proc::MWAIT_EXITING,
                "primary processor-based VM-execution",
                10,
                "MWAIT exiting",
            ),
            (
                0x48E,
                proc::MONITOR_EXITING,
                "primary processor-based VM-execution",
                29,
                "MONITOR exiting",
            ),
            (
                0x48E,
                proc::CR8_LOAD_EXITING,
                "primary processor-based VM-execution",
                19,
                "CR8-load exiting",
            ),
            (
                0x48E,
                proc::CR8_STORE_EXITING,
                "primary processor-based VM-execution",
                20,
                "CR8-store exiting",
            ),
            (
                0x48D,
                pin::EXTERNAL_INTERRUPT_EXITING,
                "pin-based VM-execution",
                0,
                "external-interrupt exiting",
            ),
            (
                0x48D,
                pin::NMI_EXITING,
                "pin-based VM-execution",
                3,
                "NMI exiting",
            ),
            (
                0x48E,
                proc::HLT_EXITING,
                "primary processor-based VM-execution",
                7,
                "HLT exiting",
            ),
            (
                0x48E,
                proc::UNCONDITIONAL_IO_EXITING,
                "primary processor-based VM-execution",
                24,
                "unconditional I/O exiting",
            ),
            (
                0x48E,
                proc::USE_MSR_BITMAPS,
                "primary processor-based VM-execution",
                28,
                "use MSR bitmaps",
            ),
            (
                0x48F,
                exit_ctl::SAVE_DEBUG,
                "VM-exit",
                2,
                "save debug controls",
            ),
            (
                0x48F,
                exit_ctl::HOST_ADDRESS_SPACE_SIZE,
                "VM-exit",
                9,
                "host address-space size",
            ),
            (0x48F, exit_ctl::SAVE_PAT, "VM-exit", 18, "save IA32_PAT"),
            (0x48F, exit_ctl::LOAD_EFER, "VM-exit", 21, "load IA32_EFER"),
            (
                0x490,
                entry::LOAD_DEBUG,
                "VM-entry",
                2,
                "load debug controls",
            ),
            (0x490, entry::LOAD_PAT, "VM-entry", 14, "load IA32_PAT"),
            (0x490, entry::LOAD_EFER, "VM-entry", 15, "load IA32_EFER"),
            (0x48F, exit_ctl::LOAD_PAT, "VM-exit", 19, "load IA32_PAT"),
        ];
        for (index, control, word, bit, name) in cases {
            let mut cpu = Cpu::haswell();
            // Clear it from allowed-0 too, so the pair stays consistent.
            let value = cpu.msrs[&index] & !(u64::from(control) << 32 | u64::from(control));
            cpu.set(index, value);
            assert_eq!(
                cpu.controls(Wanted::default()),
                Err(Refusal::ControlUnavailable { word, bit, name }),
                "{name}"
            );
        }
    }

    #[test]
    fn mwait_monitor_and_cr8_exiting_are_required() {
        const PRIMARY_WORD: &str = "primary processor-based VM-execution";
        let required = [
            (proc::MWAIT_EXITING, 10, "MWAIT exiting"),
            (proc::MONITOR_EXITING, 29, "MONITOR exiting"),
            (proc::CR8_LOAD_EXITING, 19, "CR8-load exiting"),
            (proc::CR8_STORE_EXITING, 20, "CR8-store exiting"),
        ];
        // Offered: all four are on, with and without true controls.
        for cpu in [Cpu::haswell(), Cpu::without_true_controls()] {
            let c = cpu.controls(Wanted::default()).unwrap();
            for (control, _, name) in required {
                assert_ne!(c.proc & control, 0, "{name}");
            }
        }
        // Missing from allowed-1 (allowed-0 leaves these bits clear on
        // this part): refused, by name, whichever MSR the CPU reports.
        for (index, cpu) in [
            (
                msr::IA32_VMX_TRUE_PROCBASED_CTLS,
                Cpu::haswell as fn() -> Cpu,
            ),
            (msr::IA32_VMX_PROCBASED_CTLS, Cpu::without_true_controls),
        ] {
            for (control, bit, name) in required {
                let mut cpu = cpu();
                cpu.disallow(index, control);
                let refusal = cpu.controls(Wanted::default()).unwrap_err();
                assert_eq!(
                    refusal,
                    Refusal::ControlUnavailable {
                        word: PRIMARY_WORD,
                        bit,
                        name
                    }
                );
                assert!(refusal.to_string().contains(name), "{refusal}");
            }
        }
        // Neither CR8 exit allowed: the lower bit is named.
        let mut cpu = Cpu::haswell();
        cpu.disallow(
            msr::IA32_VMX_TRUE_PROCBASED_CTLS,
            proc::CR8_LOAD_EXITING | proc::CR8_STORE_EXITING,
        );
        assert_eq!(
            cpu.controls(Wanted::default()),
            Err(Refusal::ControlUnavailable {
                word: PRIMARY_WORD,
                bit: 19,
                name: "CR8-load exiting"
            })
        );
    }

    #[test]
    fn wbinvd_exiting_is_used_when_allowed_and_dropped_when_not() {
        let c = Cpu::haswell().controls(Wanted::default()).unwrap();
        assert_ne!(c.proc2 & proc2::WBINVD_EXITING, 0);
        assert_eq!(c.proc2, 0x10EA);

        // Not allowed: no refusal, only the bit goes.
        let mut cpu = Cpu::haswell();
        cpu.disallow(msr::IA32_VMX_PROCBASED_CTLS2, proc2::WBINVD_EXITING);
        let c = cpu.controls(Wanted::default()).unwrap();
        assert_eq!(c.proc2 & proc2::WBINVD_EXITING, 0);
        assert_eq!(c.proc2, 0x10AA);

        // Without true controls the secondary word is the same.
        let c = Cpu::without_true_controls()
            .controls(Wanted::default())
            .unwrap();
        assert_eq!(c.proc2, 0x10EA);
    }

    #[test]
    fn guest_cr4_allowed_keeps_only_the_bits_a_guest_may_own() {
        const PSE: u64 = 1 << 4;
        const PAE: u64 = 1 << 5;
        const PGE: u64 = 1 << 7;
        const OSFXSR: u64 = 1 << 9;
        const SMXE: u64 = 1 << 14;
        const OSXSAVE: u64 = 1 << 18;
        const PKE: u64 = 1 << 22;
        const CET: u64 = 1 << 23;
        const PKS: u64 = 1 << 24;
        // VME..OSXMMEXCPT (0-10), UMIP (11), LA57 (12), FSGSBASE (16),
        // PCIDE (17), SMEP (20), SMAP (21).
        const GUEST_OWNED: u64 = 0x0033_1FFF;
        let allowed_with = |fixed1: u64| {
            let mut cpu = Cpu::haswell();
            cpu.set(msr::IA32_VMX_CR4_FIXED1, fixed1);
            let c = cpu.controls(Wanted::default()).unwrap();
            assert_eq!(c.guest_cr4_mask(), u64::MAX);
            c.guest_cr4_allowed()
        };
        // Every defined bit up to PKS allowed in VMX operation, and a
        // fixed-1 of all ones (an outer hypervisor may report it).
        for fixed1 in [0x01F7_7FFF, u64::MAX] {
            let allowed = allowed_with(fixed1);
            for (bit, name) in [
                (CR4_VMXE, "VMXE"),
                (SMXE, "SMXE"),
                (OSXSAVE, "OSXSAVE"),
                (PKE, "PKE"),
                (CET, "CET"),
                (PKS, "PKS"),
            ] {
                assert_eq!(allowed & bit, 0, "{name} with fixed-1 {fixed1:#x}");
            }
            for (bit, name) in [(PSE, "PSE"), (PAE, "PAE"), (PGE, "PGE"), (OSFXSR, "OSFXSR")] {
                assert_ne!(allowed & bit, 0, "{name} with fixed-1 {fixed1:#x}");
            }
            assert_eq!(allowed, GUEST_OWNED, "fixed-1 {fixed1:#x}");
        }
        // A bit the CPU does not allow in VMX operation is not the guest's
        // either, however owned.
        let allowed = allowed_with(0x01F7_7FFF & !(PAE | PGE));
        assert_eq!(allowed, GUEST_OWNED & !(PAE | PGE));
        // Only what fixed-0 demands: VMXE, which the guest never owns.
        assert_eq!(allowed_with(CR4_VMXE), 0);
    }

    #[test]
    fn long_mode_or_smm_entry_forced_by_the_cpu_is_refused() {
        for (bit, name) in [
            (9, "IA-32e mode guest"),
            (10, "entry to SMM"),
            (11, "deactivate dual-monitor treatment"),
        ] {
            let mut cpu = Cpu::haswell();
            cpu.force(msr::IA32_VMX_TRUE_ENTRY_CTLS, 1 << bit);
            assert_eq!(
                cpu.controls(Wanted::default()),
                Err(Refusal::ControlForced {
                    word: "VM-entry",
                    bit,
                    name
                })
            );
        }
    }

    #[test]
    fn guest_cr_helpers_apply_the_fixed_bits() {
        let c = Cpu::haswell().controls(Wanted::default()).unwrap();
        // Real mode: PE and PG clear, NE forced.
        assert_eq!(c.guest_cr0(0), 0x20);
        assert_eq!(c.guest_cr0(0x8000_0011), 0x8000_0031);
        assert_eq!(c.guest_cr0(1 << 32), 0x20);
        assert_eq!(c.guest_cr4(0), CR4_VMXE);
        // SMAP is not in this part's CR4_FIXED1.
        assert_eq!(c.guest_cr4(1 << 21 | 1 << 5), CR4_VMXE | 1 << 5);
        // CR0 mask: NE and everything fixed-1 forbids; PE and PG are the
        // guest's own. CR4 mask: every bit, so every change exits.
        assert_eq!(c.guest_cr0_mask(), 0xFFFF_FFFF_0000_0020);
        assert_eq!(c.guest_cr4_mask(), u64::MAX);
        assert_eq!(c.guest_cr0_mask() & (CR0_PE | CR0_PG), 0);
        assert_eq!(c.guest_cr0_allowed(), 0xFFFF_FFFF);
        // This part's fixed-1 (bits 0-10, 13, 14, 16-18, 20) less VMXE (13),
        // SMXE (14) and OSXSAVE (18): VME..OSXMMEXCPT, FSGSBASE, PCIDE, SMEP.
        assert_eq!(c.guest_cr4_allowed(), 0x0013_07FF);
    }

    #[test]
    fn adjust_forces_allowed0_and_clears_outside_allowed1() {
        assert_eq!(adjust((0x16, 0x7F), 0x9), 0x1F);
        assert_eq!(adjust((0x16, 0x7F), 0x80 | 0x1), 0x17);
        assert_eq!(adjust((0, 0), 0xFFFF_FFFF), 0);
        // Properties over a spread of inputs.
        let mut x: u64 = 0x1234_5678_9ABC_DEF1;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let allowed1 = x as u32;
            let allowed0 = (x >> 32) as u32 & allowed1;
            let want = (x >> 16) as u32;
            let got = adjust((allowed0, allowed1), want);
            assert_eq!(got & !allowed1, 0);
            assert_eq!(got & allowed0, allowed0);
            assert_eq!(got & want, want & allowed1);
            assert_eq!(got & !want & !allowed0, 0);
        }
    }

    #[test]
    fn require_fails_on_missing_bits_and_keeps_optional_ones_where_allowed() {
        let pair = (0x0400_6172, 0xFFF9_FFFE);
        assert_eq!(
            require(pair, 1 << 17 | 1 << 18, 0),
            Err(Missing { bit: 17 })
        );
        assert_eq!(require(pair, 1, 0), Err(Missing { bit: 0 }));
        // A pair demanding what it forbids.
        assert_eq!(require((0x3, 0x1), 0, 0), Err(Missing { bit: 1 }));
        // Optional bits: kept where allowed, dropped silently elsewhere.
        assert_eq!(
            require(pair, 1 << 7, 1 << 2 | 1 << 17),
            Ok(0x0400_6172 | 1 << 7 | 1 << 2)
        );
        // With true controls, default-1 CR3 exiting stays clear unless asked.
        let got = require(pair, 0, 0).unwrap();
        assert_eq!(got & proc::CR3_LOAD_EXITING, 0);
        let got = require(pair, 0, proc::CR3_LOAD_EXITING).unwrap();
        assert_ne!(got & proc::CR3_LOAD_EXITING, 0);
        assert_eq!(require((0x0401_E172, 0xFFF9_FFFE), 0, 0), Ok(0x0401_E172));
    }

    #[test]
    fn io_exit_decodes_every_field_and_refuses_undefined_sizes() {
        // out dx, al with dx = 0x3f8.
        assert_eq!(
            IoExit::decode(0x03F8_0000),
            Ok(IoExit {
                port: 0x3F8,
                size: 1,
                input: false,
                string: false,
                rep: false,
                immediate: false
            })
        );
        // in eax, 0x60.
        assert_eq!(
            IoExit::decode(0x0060_0000 | 3 | 1 << 3 | 1 << 6),
            Ok(IoExit {
                port: 0x60,
                size: 4,
                input: true,
                string: false,
                rep: false,
                immediate: true
            })
        );
        // rep insw from 0x1f0; high qualification bits ignored.
        assert_eq!(
            IoExit::decode(0xFFFF_0000_0000_0000 | 0x01F0_0000 | 1 | 1 << 3 | 1 << 4 | 1 << 5),
            Ok(IoExit {
                port: 0x1F0,
                size: 2,
                input: true,
                string: true,
                rep: true,
                immediate: false
            })
        );
        for code in [2u8, 4, 5, 6, 7] {
            assert_eq!(
                IoExit::decode(u64::from(code)),
                Err(QualError::IoSize(code))
            );
        }
        assert_eq!(
            QualError::IoSize(2).to_string(),
            "I/O exit qualification has access-size code 2; only 0, 1 and 3 are defined"
        );
    }

    #[test]
    fn ept_violation_decodes_every_field() {
        let none = EptViolation::decode(0);
        assert_eq!(
            EptViolation::decode(1 << 1 | 1 << 7 | 1 << 8),
            EptViolation {
                write: true,
                gla_valid: true,
                translated_access: true,
                ..none
            }
        );
        assert_eq!(
            EptViolation::decode(1 << 2 | 1 << 3 | 1 << 4),
            EptViolation {
                fetch: true,
                readable: true,
                writable: true,
                ..none
            }
        );
        assert_eq!(
            EptViolation::decode(1 | 1 << 5 | 1 << 12),
            EptViolation {
                read: true,
                executable: true,
                nmi_unblocking: true,
                ..none
            }
        );
        assert!(!none.read && !none.gla_valid && !none.nmi_unblocking);
    }

    #[test]
    fn cr_access_decodes_every_kind() {
        // mov cr3, rbx
        let mov_to = CrAccess::decode(3 | 3 << 8);
        assert_eq!(
            (mov_to.cr, mov_to.access, mov_to.gpr),
            (3, CrAccessType::MovTo, 3)
        );
        // mov r15, cr4
        let mov_from = CrAccess::decode(4 | 1 << 4 | 15 << 8);
        assert_eq!(
            (mov_from.cr, mov_from.access, mov_from.gpr),
            (4, CrAccessType::MovFrom, 15)
        );
        assert_eq!(CrAccess::decode(2 << 4).access, CrAccessType::Clts);
        // lmsw [mem] with source 0x1
        let lmsw = CrAccess::decode(3 << 4 | 1 << 6 | 0x1 << 16);
        assert_eq!(
            lmsw,
            CrAccess {
                cr: 0,
                access: CrAccessType::Lmsw,
                gpr: 0,
                lmsw_memory: true,
                lmsw_source: 1
            }
        );
        assert_eq!(CrAccess::decode(8).cr, 8);
    }

    #[test]
    fn exit_reason_splits_and_names() {
        assert_eq!(
            ExitReason::decode(0x8000_0021),
            ExitReason {
                basic: 33,
                entry_failure: true
            }
        );
        assert_eq!(
            ExitReason::decode(48),
            ExitReason {
                basic: 48,
                entry_failure: false
            }
        );
        assert_eq!(
            exit::name(0x8000_0021),
            "VM-entry failure: invalid guest state"
        );
        assert_eq!(exit::name(exit::EPT_VIOLATION), "EPT violation");
        assert_eq!(exit::name(0x0001_0030), "EPT violation");
        assert_eq!(exit::name(35), "unknown exit reason");
        assert_eq!(exit::name(71), "unknown exit reason");
        assert_eq!(exit::name(0xFFFF), "unknown exit reason");
        // Every defined reason has its own name.
        let named: Vec<u32> = (0..=80)
            .filter(|r| exit::name(*r) != "unknown exit reason")
            .collect();
        let mut names: Vec<&str> = named.iter().map(|r| exit::name(*r)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), named.len());
        assert_eq!(named.len(), 72);
    }

    #[test]
    fn exit_reason_numbers_match_the_sdm() {
        use exit::*;
        let table = [
            (EXCEPTION_NMI, 0),
            (EXTERNAL_INTERRUPT, 1),
            (TRIPLE_FAULT, 2),
            (INIT, 3),
            (SIPI, 4),
            (INTERRUPT_WINDOW, 7),
            (NMI_WINDOW, 8),
            (TASK_SWITCH, 9),
            (CPUID, 10),
            (HLT, 12),
            (INVD, 13),
            (INVLPG, 14),
            (RDPMC, 15),
            (RDTSC, 16),
            (VMCALL, 18),
            (VMCLEAR, 19),
            (VMXON, 27),
            (CR_ACCESS, 28),
            (DR_ACCESS, 29),
            (IO, 30),
            (RDMSR, 31),
            (WRMSR, 32),
            (ENTRY_FAIL_GUEST_STATE, 33),
            (ENTRY_FAIL_MSR, 34),
            (MWAIT, 36),
            (MTF, 37),
            (MONITOR, 39),
            (PAUSE, 40),
            (ENTRY_FAIL_MCE, 41),
            (TPR_BELOW, 43),
            (APIC_ACCESS, 44),
            (GDTR_IDTR, 46),
            (LDTR_TR, 47),
            (EPT_VIOLATION, 48),
            (EPT_MISCONFIG, 49),
            (INVEPT, 50),
            (RDTSCP, 51),
            (PREEMPTION_TIMER, 52),
            (INVVPID, 53),
            (WBINVD, 54),
            (XSETBV, 55),
            (XSAVES, 63),
        ];
        for (constant, number) in table {
            assert_eq!(constant, number, "{}", exit::name(number));
        }
    }

    /// An encoding built from the SDM's rule: access bit 0, index 9:1,
    /// type 11:10, width 14:13.
    fn enc(width: u32, kind: u32, index: u32) -> u32 {
        width << 13 | kind << 10 | index << 1
    }
    const W16: u32 = 0;
    const W64: u32 = 1;
    const W32: u32 = 2;
    const WNAT: u32 = 3;
    const CONTROL: u32 = 0;
    const READ_ONLY: u32 = 1;
    const GUEST: u32 = 2;
    const HOST: u32 = 3;

    fn check_run(width: u32, kind: u32, first: u32, fields: &[u32]) {
        for (i, f) in (first..).zip(fields) {
            assert_eq!(*f, enc(width, kind, i), "field {f:#x}, index {i}");
        }
    }

    #[test]
    fn field_encodings_follow_the_sdm_layout() {
        use field::*;
        check_run(
            W16,
            CONTROL,
            0,
            &[VPID, POSTED_INTERRUPT_VECTOR, EPTP_INDEX],
        );
        check_run(
            W16,
            GUEST,
            0,
            &[
                GUEST_ES_SELECTOR,
                GUEST_CS_SELECTOR,
                GUEST_SS_SELECTOR,
                GUEST_DS_SELECTOR,
                GUEST_FS_SELECTOR,
                GUEST_GS_SELECTOR,
                GUEST_LDTR_SELECTOR,
                GUEST_TR_SELECTOR,
                GUEST_INTERRUPT_STATUS,
                GUEST_PML_INDEX,
            ],
        );
        check_run(
            W16,
            HOST,
            0,
            &[
                HOST_ES_SELECTOR,
                HOST_CS_SELECTOR,
                HOST_SS_SELECTOR,
                HOST_DS_SELECTOR,
                HOST_FS_SELECTOR,
                HOST_GS_SELECTOR,
                HOST_TR_SELECTOR,
            ],
        );
        check_run(
            W64,
            CONTROL,
            0,
            &[
                IO_BITMAP_A,
                IO_BITMAP_B,
                MSR_BITMAP,
                EXIT_MSR_STORE_ADDR,
                EXIT_MSR_LOAD_ADDR,
                ENTRY_MSR_LOAD_ADDR,
                EXECUTIVE_VMCS_POINTER,
                PML_ADDRESS,
                TSC_OFFSET,
                VIRTUAL_APIC_ADDRESS,
                APIC_ACCESS_ADDRESS,
                POSTED_INTERRUPT_DESCRIPTOR,
                VM_FUNCTION_CONTROLS,
                EPT_POINTER,
                EOI_EXIT_BITMAP0,
                EOI_EXIT_BITMAP1,
                EOI_EXIT_BITMAP2,
                EOI_EXIT_BITMAP3,
                EPTP_LIST_ADDRESS,
                VMREAD_BITMAP,
                VMWRITE_BITMAP,
                VE_INFO_ADDRESS,
                XSS_EXIT_BITMAP,
                ENCLS_EXIT_BITMAP,
            ],
        );
        check_run(W64, CONTROL, 25, &[TSC_MULTIPLIER]);
        check_run(W64, READ_ONLY, 0, &[GUEST_PHYSICAL_ADDRESS]);
        check_run(
            W64,
            GUEST,
            0,
            &[
                VMCS_LINK_POINTER,
                GUEST_IA32_DEBUGCTL,
                GUEST_IA32_PAT,
                GUEST_IA32_EFER,
                GUEST_IA32_PERF_GLOBAL_CTRL,
                GUEST_PDPTE0,
                GUEST_PDPTE1,
                GUEST_PDPTE2,
                GUEST_PDPTE3,
            ],
        );
        check_run(
            W64,
            HOST,
            0,
            &[HOST_IA32_PAT, HOST_IA32_EFER, HOST_IA32_PERF_GLOBAL_CTRL],
        );
        check_run(
            W32,
            CONTROL,
            0,
            &[
                PIN_CONTROLS,
                PROC_CONTROLS,
                EXCEPTION_BITMAP,
                PAGE_FAULT_ERROR_MASK,
                PAGE_FAULT_ERROR_MATCH,
                CR3_TARGET_COUNT,
                EXIT_CONTROLS,
                EXIT_MSR_STORE_COUNT,
                EXIT_MSR_LOAD_COUNT,
                ENTRY_CONTROLS,
                ENTRY_MSR_LOAD_COUNT,
                VM_ENTRY_INTR_INFO,
                ENTRY_EXCEPTION_ERROR_CODE,
                ENTRY_INSTRUCTION_LEN,
                TPR_THRESHOLD,
                SECONDARY_PROC_CONTROLS,
                PLE_GAP,
                PLE_WINDOW,
            ],
        );
        check_run(
            W32,
            READ_ONLY,
            0,
            &[
                VM_INSTRUCTION_ERROR,
                EXIT_REASON,
                EXIT_INTR_INFO,
                EXIT_INTR_ERROR_CODE,
                IDT_VECTORING_INFO,
                IDT_VECTORING_ERROR,
                EXIT_INSTRUCTION_LEN,
                VMX_INSTRUCTION_INFO,
            ],
        );
        check_run(
            W32,
            GUEST,
            0,
            &[
                GUEST_ES_LIMIT,
                GUEST_CS_LIMIT,
                GUEST_SS_LIMIT,
                GUEST_DS_LIMIT,
                GUEST_FS_LIMIT,
                GUEST_GS_LIMIT,
                GUEST_LDTR_LIMIT,
                GUEST_TR_LIMIT,
                GUEST_GDTR_LIMIT,
                GUEST_IDTR_LIMIT,
                GUEST_ES_ACCESS_RIGHTS,
                GUEST_CS_ACCESS_RIGHTS,
                GUEST_SS_ACCESS_RIGHTS,
                GUEST_DS_ACCESS_RIGHTS,
                GUEST_FS_ACCESS_RIGHTS,
                GUEST_GS_ACCESS_RIGHTS,
                GUEST_LDTR_ACCESS_RIGHTS,
                GUEST_TR_ACCESS_RIGHTS,
                GUEST_INTERRUPTIBILITY,
                GUEST_ACTIVITY_STATE,
                GUEST_SMBASE,
                GUEST_SYSENTER_CS,
            ],
        );
        // Index 22 is unused; the timer value is 23.
        check_run(W32, GUEST, 23, &[PREEMPTION_TIMER_VALUE]);
        check_run(W32, HOST, 0, &[HOST_SYSENTER_CS]);
        check_run(
            WNAT,
            CONTROL,
            0,
            &[
                CR0_GUEST_HOST_MASK,
                CR4_GUEST_HOST_MASK,
                CR0_READ_SHADOW,
                CR4_READ_SHADOW,
                CR3_TARGET_VALUE0,
                CR3_TARGET_VALUE1,
                CR3_TARGET_VALUE2,
                CR3_TARGET_VALUE3,
            ],
        );
        check_run(
            WNAT,
            READ_ONLY,
            0,
            &[
                EXIT_QUALIFICATION,
                IO_RCX,
                IO_RSI,
                IO_RDI,
                IO_RIP,
                GUEST_LINEAR_ADDRESS,
            ],
        );
        check_run(
            WNAT,
            GUEST,
            0,
            &[
                GUEST_CR0,
                GUEST_CR3,
                GUEST_CR4,
                GUEST_ES_BASE,
                GUEST_CS_BASE,
                GUEST_SS_BASE,
                GUEST_DS_BASE,
                GUEST_FS_BASE,
                GUEST_GS_BASE,
                GUEST_LDTR_BASE,
                GUEST_TR_BASE,
                GUEST_GDTR_BASE,
                GUEST_IDTR_BASE,
                GUEST_DR7,
                GUEST_RSP,
                GUEST_RIP,
                GUEST_RFLAGS,
                GUEST_PENDING_DBG_EXCEPTIONS,
                GUEST_SYSENTER_ESP,
                GUEST_SYSENTER_EIP,
            ],
        );
        check_run(
            WNAT,
            HOST,
            0,
            &[
                HOST_CR0,
                HOST_CR3,
                HOST_CR4,
                HOST_FS_BASE,
                HOST_GS_BASE,
                HOST_TR_BASE,
                HOST_GDTR_BASE,
                HOST_IDTR_BASE,
                HOST_SYSENTER_ESP,
                HOST_SYSENTER_EIP,
                HOST_RSP,
                HOST_RIP,
            ],
        );
        // Spot checks against the numbers as the SDM prints them.
        assert_eq!(
            [
                EPT_POINTER,
                VMCS_LINK_POINTER,
                GUEST_ACTIVITY_STATE,
                HOST_RIP
            ],
            [0x201A, 0x2800, 0x4826, 0x6C16]
        );
    }

    #[test]
    fn control_bits_and_names_match_the_sdm() {
        assert_eq!(
            [
                pin::EXTERNAL_INTERRUPT_EXITING,
                pin::NMI_EXITING,
                pin::VIRTUAL_NMIS,
                pin::PREEMPTION_TIMER
            ],
            [1, 8, 32, 64]
        );
        assert_eq!(proc::USE_MSR_BITMAPS, 0x1000_0000);
        assert_eq!(proc::ACTIVATE_SECONDARY, 0x8000_0000);
        assert_eq!(proc2::UNRESTRICTED_GUEST, 0x80);
        assert_eq!(proc2::ENABLE_XSAVES, 0x10_0000);
        assert_eq!(exit_ctl::LOAD_EFER, 0x20_0000);
        assert_eq!(entry::IA32E_MODE_GUEST, 0x200);
        assert_eq!(pin::name(6), "activate VMX-preemption timer");
        assert_eq!(pin::name(1), "reserved");
        assert_eq!(pin::name(40), "reserved");
        assert_eq!(proc::name(31), "activate secondary controls");
        assert_eq!(proc::name(0), "reserved");
        assert_eq!(proc2::name(10), "PAUSE-loop exiting");
        assert_eq!(proc2::name(31), "unnamed secondary control");
        assert_eq!(exit_ctl::name(22), "save VMX-preemption timer value");
        assert_eq!(exit_ctl::name(u32::MAX), "unnamed VM-exit control");
        assert_eq!(entry::name(15), "load IA32_EFER");
        assert_eq!(entry::name(0), "unnamed VM-entry control");
    }

    #[test]
    fn instruction_errors_are_named() {
        assert_eq!(
            instruction_error::name(7),
            "VM entry with invalid control field(s)"
        );
        assert_eq!(
            instruction_error::name(8),
            "VM entry with invalid host-state field(s)"
        );
        assert_eq!(instruction_error::name(14), "unknown VM-instruction error");
        assert_eq!(instruction_error::name(0), "unknown VM-instruction error");
    }

    #[test]
    fn intr_info_builds_the_entry_field() {
        let ext = IntrInfo::external(0x20);
        assert_eq!((ext.0, ext.delivers_error_code()), (0x8000_0020, false));
        assert_eq!(IntrInfo::nmi().0, 0x8000_0202);
        let gp = IntrInfo::hardware_exception(13, Some(0x18));
        assert_eq!((gp.0, gp.delivers_error_code()), (0x8000_0B0D, true));
        let ud = IntrInfo::hardware_exception(6, None);
        assert_eq!((ud.0, ud.delivers_error_code()), (0x8000_0306, false));
        assert_eq!(IntrInfo::software_interrupt(0x80).0, 0x8000_0480);
        let real = gp.for_real_mode();
        assert_eq!((real.0, real.delivers_error_code()), (0x8000_030D, false));
        // Round trip through the exit-side decoder.
        assert_eq!(
            EventInfo::decode(gp.0),
            Some(EventInfo {
                vector: 13,
                kind: EventType::HardwareException,
                error_code_valid: true,
                nmi_unblocking: false
            })
        );
    }

    #[test]
    fn intr_info_check_applies_the_entry_rules() {
        let gp = IntrInfo::hardware_exception(13, Some(0));
        let gp_bare = IntrInfo::hardware_exception(13, None);
        let ud_code = IntrInfo::hardware_exception(6, Some(0));
        assert_eq!(gp.check(true, false), Ok(()));
        assert_eq!(
            gp.check(false, false),
            Err(BadInjection::ErrorCodeInRealMode)
        );
        assert_eq!(gp.for_real_mode().check(false, false), Ok(()));
        assert_eq!(
            gp_bare.check(true, false),
            Err(BadInjection::MissingErrorCode(13))
        );
        assert_eq!(gp_bare.check(false, false), Ok(()));
        assert_eq!(
            ud_code.check(true, false),
            Err(BadInjection::UnexpectedErrorCode(6))
        );
        // VMX_BASIC bit 56 lifts the vector rule, not the real-mode one.
        assert_eq!(ud_code.check(true, true), Ok(()));
        assert_eq!(gp_bare.check(true, true), Ok(()));
        assert_eq!(
            ud_code.check(false, true),
            Err(BadInjection::ErrorCodeInRealMode)
        );
        assert_eq!(
            IntrInfo::hardware_exception(32, None).check(true, false),
            Err(BadInjection::VectorOutOfRange(32))
        );
        assert_eq!(IntrInfo::external(200).check(true, false), Ok(()));
        assert_eq!(IntrInfo::nmi().check(false, false), Ok(()));
        for v in [8u8, 10, 11, 12, 13, 14, 17] {
            assert!(exception_has_error_code(v), "{v}");
        }
        for v in [0u8, 1, 3, 6, 7, 9, 15, 16, 18, 19, 21, 32] {
            assert!(!exception_has_error_code(v), "{v}");
        }
        assert_eq!(
            BadInjection::MissingErrorCode(13).to_string(),
            "exception vector 13 needs an error code in protected mode"
        );
        for bad in [
            BadInjection::VectorOutOfRange(40),
            BadInjection::ErrorCodeInRealMode,
            BadInjection::UnexpectedErrorCode(6),
        ] {
            assert!(!bad.to_string().is_empty());
        }
    }

    #[test]
    fn event_info_decodes_every_type() {
        assert_eq!(EventInfo::decode(0x0000_0B0E), None);
        let nmi = EventInfo::decode(0x8000_1202).unwrap();
        assert_eq!(
            (nmi.vector, nmi.kind, nmi.nmi_unblocking),
            (2, EventType::Nmi, true)
        );
        let kinds = [
            EventType::External,
            EventType::Reserved,
            EventType::Nmi,
            EventType::HardwareException,
            EventType::SoftwareInterrupt,
            EventType::PrivilegedSoftwareException,
            EventType::SoftwareException,
            EventType::Other,
        ];
        for (t, kind) in (0u32..).zip(kinds) {
            let info = EventInfo::decode(INFO_VALID | t << 8 | 0x41).unwrap();
            assert_eq!(
                (info.kind, info.vector, info.error_code_valid),
                (kind, 0x41, false)
            );
        }
    }

    #[test]
    fn msr_bitmap_places_each_bit_and_refuses_uncovered_msrs() {
        use msr_bitmap::{Access, NotCovered, intercept_all, intercepts, set};
        let mut page = [0u8; msr_bitmap::SIZE];
        // Read low, read high, write low, write high quarters.
        set(&mut page, 0, Access::Read, true).unwrap();
        set(&mut page, 0x1FFF, Access::Write, true).unwrap();
        set(&mut page, msr::IA32_EFER, Access::Read, true).unwrap();
        set(&mut page, msr::IA32_EFER, Access::Write, true).unwrap();
        let mut expected = [0u8; msr_bitmap::SIZE];
        expected[0] = 1;
        expected[2048 + 1023] = 0x80;
        expected[1024 + 0x10] = 1;
        expected[3072 + 0x10] = 1;
        assert_eq!(page, expected);

        intercept_all(&mut page);
        assert!(page.iter().all(|b| *b == 0xFF));
        set(&mut page, msr::IA32_FS_BASE, Access::Read, false).unwrap();
        assert!(!intercepts(&page, msr::IA32_FS_BASE, Access::Read));
        assert!(intercepts(&page, msr::IA32_FS_BASE, Access::Write));
        assert!(intercepts(&page, msr::IA32_GS_BASE, Access::Read));
        set(&mut page, msr::IA32_FS_BASE, Access::Read, true).unwrap();
        assert!(intercepts(&page, msr::IA32_FS_BASE, Access::Read));

        let zero = [0u8; msr_bitmap::SIZE];
        assert!(!intercepts(&zero, msr::IA32_PAT, Access::Write));
        for outside in [0x2000, 0xBFFF_FFFF, 0xC000_2000, u32::MAX] {
            assert_eq!(
                set(&mut page, outside, Access::Read, false),
                Err(NotCovered(outside))
            );
            assert!(intercepts(&zero, outside, Access::Read));
            assert!(intercepts(&zero, outside, Access::Write));
        }
        assert_eq!(
            NotCovered(0x2000).to_string(),
            "MSR 0x2000 is outside the ranges the MSR bitmap covers; it always exits"
        );
    }

    #[test]
    fn every_refusal_reads_as_a_sentence() {
        assert_eq!(
            Refusal::NoVmx.to_string(),
            "this CPU has no VMX (CPUID.1:ECX bit 5 is clear)"
        );
        assert_eq!(
            Refusal::MissingMsr(0x48C).to_string(),
            "MSR 0x48c could not be read although VMX reports it present"
        );
        assert_eq!(
            Refusal::ControlUnavailable {
                word: "VM-exit",
                bit: 21,
                name: "load IA32_EFER"
            }
            .to_string(),
            "the VM-exit control 'load IA32_EFER' (bit 21) is required but this CPU does not allow it"
        );
        assert_eq!(
            Refusal::VmcsSize(8191).to_string(),
            "IA32_VMX_BASIC reports a VMCS region of 8191 bytes; 1 to 4096 expected"
        );
        let all = [
            Refusal::NoVmx,
            Refusal::DisabledByFirmware,
            Refusal::MissingMsr(0x480),
            Refusal::VmcsSize(0),
            Refusal::NotWriteBack(0),
            Refusal::AddressWidth32,
            Refusal::InconsistentControls(0x48D),
            Refusal::InconsistentFixedBits(0x486),
            Refusal::ControlUnavailable {
                word: "VM-entry",
                bit: 15,
                name: "load IA32_EFER",
            },
            Refusal::ControlForced {
                word: "VM-entry",
                bit: 9,
                name: "IA-32e mode guest",
            },
            Refusal::NoEpt,
            Refusal::EptNo4Level,
            Refusal::EptNoWriteBack,
            Refusal::NoInvept,
            Refusal::NoUnrestrictedGuest,
            Refusal::NoLmaStore,
        ];
        let mut texts: Vec<String> = all.iter().map(|r| r.to_string()).collect();
        for t in &texts {
            assert!(!t.contains('\n') && t.len() > 20, "{t}");
        }
        assert!(texts[1].contains("firmware"));
        assert!(texts[4].contains("memory type 0"));
        assert!(texts[9].contains("'IA-32e mode guest' (bit 9)"));
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), all.len());
    }
}
