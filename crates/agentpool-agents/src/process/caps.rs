//! Children of a worker running as root lose root's override of file permissions
//! (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`). Without this, mode bits mean nothing to a task's
//! processes, and one task could list the non-listable parent of the other tasks' private
//! directories (crates/agentpool-runner/src/private.rs). Root keeps its other powers: this
//! narrows what a careless or curious task sees, it is no sandbox (docs/guarantees.md).

use std::io;

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Whether this process runs as root, so that its children would bypass file modes.
pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Run in the forked child before exec: take the two capabilities out of the bounding set
/// (what an exec as root gets) and out of the inheritable set (what it could carry over).
/// Only raw system calls, as required between fork and exec. A container without
/// `CAP_SETPCAP` refuses the first step; the child then runs as it would have before.
pub(crate) fn drop_file_override() -> io::Result<()> {
    for cap in [CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH] {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as version 3 of the interface expects.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Ok(());
    }
    let mask = !((1u32 << CAP_DAC_OVERRIDE) | (1u32 << CAP_DAC_READ_SEARCH));
    data[0].inheritable &= mask;
    data[0].effective &= mask;
    // SAFETY: as above; lowering capabilities needs no privilege.
    unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    Ok(())
}
