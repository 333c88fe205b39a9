//! Link-time settings of the binary.

fn main() {
    // The binary is position-independent, so the loader relocates about 47,000 pointers at
    // start. Packed relative relocations (DT_RELR, glibc 2.36, the image's Debian 12) store them
    // in kilobytes instead of 1.1 MB of `.rela.dyn`, pages the daemon reads once and would keep
    // in its RSS (docs/daemon.md "Scale").
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
