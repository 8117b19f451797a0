//! The SIGILL handler the preloaded library installs (only with [`crate::ENV`] set).

use std::ffi::c_void;
use std::sync::OnceLock;

use crate::patch::TRAP;
use crate::Profile;

static PROFILE: OnceLock<Profile> = OnceLock::new();

// Runs when the dynamic loader loads the library, before `main` and before Rust's std or
// Python read the CPU's features.
#[used]
#[link_section = ".init_array"]
static INSTALL: extern "C" fn() = install;

extern "C" fn install() {
    let Some(name) = std::env::var_os(crate::ENV) else {
        return;
    };
    let Some(profile) = name.to_str().and_then(Profile::parse) else {
        let message = b"MM_CPU_MASK names no known profile (avx2)\n";
        // SAFETY: writes a static buffer to stderr; aborting beats measuring the wrong CPU.
        unsafe {
            libc::write(2, message.as_ptr().cast(), message.len());
            libc::abort();
        }
    };
    let _ = PROFILE.set(profile);
    // SAFETY: installs a handler for this process; the action is fully initialised.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigill as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGILL, &action, std::ptr::null_mut());
    }
}

/// Answers a rewritten `cpuid` with the profile's features and resumes after it; any other
/// illegal instruction gets the default action back and kills the process as it would have.
extern "C" fn on_sigill(_signal: libc::c_int, _info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel passes a valid ucontext_t for SA_SIGINFO handlers, and the
    // instruction pointer of a SIGILL points at readable code.
    unsafe {
        let context = &mut *context.cast::<libc::ucontext_t>();
        let registers = &mut context.uc_mcontext.gregs;
        let ip = registers[libc::REG_RIP as usize] as *const [u8; 2];
        if ip.read_unaligned() != TRAP {
            libc::signal(libc::SIGILL, libc::SIG_DFL);
            return;
        }
        let leaf = registers[libc::REG_RAX as usize] as u32;
        let subleaf = registers[libc::REG_RCX as usize] as u32;
        let real = std::arch::x86_64::__cpuid_count(leaf, subleaf);
        let profile = PROFILE.get().copied().unwrap_or(Profile::Avx2);
        let [eax, ebx, ecx, edx] =
            profile.mask(leaf, subleaf, [real.eax, real.ebx, real.ecx, real.edx]);
        // cpuid zero-extends its 32-bit results into the full registers.
        registers[libc::REG_RAX as usize] = i64::from(eax);
        registers[libc::REG_RBX as usize] = i64::from(ebx);
        registers[libc::REG_RCX as usize] = i64::from(ecx);
        registers[libc::REG_RDX as usize] = i64::from(edx);
        registers[libc::REG_RIP as usize] += TRAP.len() as i64;
    }
}
