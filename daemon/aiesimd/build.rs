//! Builds the fast-path BPF program (`ebpf/program`) so `src/fastpath` can embed it.
//!
//! The BPF crate needs a compiler with a prebuilt `core` for `bpfel-unknown-none` (Debian's
//! `rustc-web` + `libstd-rust-web-dev-bpf`, linked into rustup as `debian-bpf`) and `bpf-linker`
//! (installed under `<workspace>/.tools/bin`). `cargo xtask setup` provides both.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

const BPF_PACKAGE: &str = "aiesim-fastpath-ebpf";
/// The `[[bin]]` name of the BPF crate, which is also the object's file name in `OUT_DIR`.
const BPF_OBJECT: &str = "aiesim-fastpath";
const TOOLCHAIN: &str = "debian-bpf";
const SETUP_HINT: &str = "run `cargo xtask setup` to install it";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let workspace = manifest_dir
        .ancestors()
        .nth(2)
        .context("aiesimd is expected two levels below the workspace root")?
        .to_path_buf();
    let program_dir = workspace.join("ebpf/program");
    let common_dir = workspace.join("ebpf/common");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);

    for path in [
        program_dir.join("Cargo.toml"),
        program_dir.join("Cargo.lock"),
        program_dir.join("src"),
        common_dir.join("Cargo.toml"),
        common_dir.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");

    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // An empty object keeps `include_bytes_aligned!` compiling; attaching then reports it.
        fs::write(out_dir.join(BPF_OBJECT), []).context("failed to write the placeholder BPF object")?;
        println!("cargo:warning=AYA_BUILD_SKIP is set: aiesimd is built without its BPF program");
        return Ok(());
    }

    let tools_bin = workspace.join(".tools/bin");
    let path = prepend_path(&tools_bin)?;
    let bpf_linker = find_in_path(&path, "bpf-linker")
        .ok_or_else(|| anyhow!("bpf-linker is not in {} nor on PATH; {SETUP_HINT}", tools_bin.display()))?;
    // Relinking with a different bpf-linker must rebuild the object.
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
    check_toolchain(&path)?;

    build_bpf(&path, &program_dir, &out_dir)
}

/// Builds the BPF crate for `bpfel` (`bpfeb` on a big-endian target) into `out_dir`, as
/// aya-build would, plus two code generation flags aya-build 0.2.0 (which sets the rustflags
/// whole) leaves no room for: `-C target-cpu=v3`, ALU32 and JMP32 (kernel 5.1 and later), which
/// spare the classifier the zero-extensions of 32-bit values in 64-bit registers, and unaligned
/// packet reads.
fn build_bpf(path: &OsString, program_dir: &Path, out_dir: &Path) -> anyhow::Result<()> {
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    // aya-ebpf's name for the architecture whose kernel structures it reads.
    let arch = if arch.starts_with("riscv64") { "riscv64" } else { &arch };
    let flags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        // BTF for the maps and programs; the datapath itself needs none (no CO-RE).
        "-Clink-arg=--btf".to_owned(),
        "-Ctarget-cpu=v3".to_owned(),
        // Packet words read as words, not assembled from bytes (an IPv6 address: 4 loads, not
        // 40 instructions). The verifier allows unaligned packet reads where the CPU handles
        // them (x86-64, arm64); stack accesses must still be aligned, which the program's
        // keys see to (`from_words`), and a load of the program in every test checks.
        "-Clink-arg=--cpu-features=+allows-misaligned-mem-access".to_owned(),
    ];
    let target_dir = out_dir.join("bpf-target");
    let mut cargo = bpf_tool(path, "cargo");
    cargo
        .args([
            "build",
            "--package",
            BPF_PACKAGE,
            "--bins",
            "--release",
            "--target",
            target,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // The BPF crate is its own workspace (excluded from ours): cargo starts from its directory.
        .current_dir(program_dir)
        .env("PATH", path)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        // aya-ebpf uses unstable features; allowed for that crate only.
        .env("RUSTC_BOOTSTRAP", "aya_ebpf")
        // Set by the cargo running this script, for its own compiler: not the BPF one.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    let output = cargo
        .output()
        .with_context(|| format!("failed to run {cargo:?}; {SETUP_HINT}"))?;
    if !output.status.success() {
        bail!(
            "building {BPF_PACKAGE} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let built = target_dir.join(target).join("release").join(BPF_OBJECT);
    fs::copy(&built, out_dir.join(BPF_OBJECT))
        .with_context(|| format!("failed to copy {} into {}", built.display(), out_dir.display()))?;
    Ok(())
}

/// `PATH` with `dir` in front, so the project's own bpf-linker wins.
fn prepend_path(dir: &Path) -> anyhow::Result<OsString> {
    let current = env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(env::split_paths(&current));
    env::join_paths(dirs).context("a PATH entry contains the path separator")
}

fn find_in_path(path: &OsString, name: &str) -> Option<PathBuf> {
    env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `tool` (cargo, rustc) of the BPF toolchain: `rustup run <toolchain> <tool>` where rustup
/// exists, PATH's own otherwise.
fn bpf_tool(path: &OsString, tool: &str) -> Command {
    if find_in_path(path, "rustup").is_some() {
        let mut rustup = Command::new("rustup");
        rustup.args(["run", TOOLCHAIN, tool]);
        rustup
    } else {
        Command::new(tool)
    }
}

/// Fails early, with the fix, when the compiler for the BPF crate or its BPF `core` is missing.
fn check_toolchain(path: &OsString) -> anyhow::Result<()> {
    let mut rustc = bpf_tool(path, "rustc");
    rustc.args(["--print", "sysroot"]).env("PATH", path);
    let output = rustc
        .output()
        .with_context(|| format!("failed to run {rustc:?}; {SETUP_HINT}"))?;
    if !output.status.success() {
        bail!(
            "the BPF compiler is missing ({}): the rustup toolchain {TOOLCHAIN} is needed; {SETUP_HINT}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let core = sysroot.join("lib/rustlib").join(target).join("lib");
    if !core.is_dir() {
        bail!(
            "the BPF compiler has no prebuilt core in {} (Debian package libstd-rust-web-dev-bpf); {SETUP_HINT}",
            core.display()
        );
    }
    Ok(())
}
