//! Builds the hypervisor binaries with the workspace's own cargo.
//!
//! The hypervisors are workspace members built for bare-metal targets (and
//! xentool, the Linux guests' test tool, for aarch64-unknown-linux-musl), so
//! they cannot ride along with a host `cargo build`; this module runs cargo
//! for them with the right target, profile and board feature, and returns the
//! ELF it produced.

use std::path::PathBuf;
use std::process::Command;

use crate::host::{target_dir, workspace_root};

/// One bare-metal build.
#[derive(Clone, Debug)]
pub struct Build<'a> {
    /// Workspace package (`hv-arm`, `hv-x86`, a test guest, `xentool`).
    pub package: &'a str,
    /// Target triple.
    pub target: &'a str,
    /// Cargo features (besides the package's defaults unless `no_default_features`).
    pub features: Vec<String>,
    /// Drop the package's default features.
    pub no_default_features: bool,
    /// Release profile.
    pub release: bool,
}

impl Build<'_> {
    /// Runs cargo and returns the path of the built ELF.
    pub fn run(&self) -> Result<PathBuf, String> {
        self.run_with_env(&[])
    }

    /// [`Build::run`] with more environment for cargo, e.g. a profile
    /// override (`CARGO_PROFILE_RELEASE_STRIP=symbols`).
    pub fn run_with_env(&self, env: &[(&str, &str)]) -> Result<PathBuf, String> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root()).args([
            "build",
            "-q",
            "-p",
            self.package,
            "--target",
            self.target,
        ]);
        if self.release {
            cmd.arg("--release");
        }
        if self.no_default_features {
            cmd.arg("--no-default-features");
        }
        if !self.features.is_empty() {
            cmd.arg("--features").arg(self.features.join(","));
        }
        // A host `cargo run`/`cargo test` exports variables meant for host
        // builds; keep them from leaking into the bare-metal build.
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!(
                "cargo build -p {} --target {} failed ({status})",
                self.package, self.target
            ));
        }
        let profile = if self.release { "release" } else { "debug" };
        let elf = target_dir()
            .join(self.target)
            .join(profile)
            .join(self.package);
        if elf.is_file() {
            Ok(elf)
        } else {
            Err(format!("cargo succeeded but {} is missing", elf.display()))
        }
    }
}
