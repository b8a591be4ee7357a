//! Records the git commit for `vsr version`.
fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=VSR_GIT_COMMIT={commit}");
    // Kept equal to header::PROTOCOL_VERSION by a test in tests/data_file.rs.
    println!("cargo:rustc-env=VSR_PROTOCOL_VERSION=1");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
