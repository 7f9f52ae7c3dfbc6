//! `ward-worker` under a test-only name, so that integration tests get its path.
fn main() -> std::process::ExitCode {
    ward_worker::cli::main()
}
