fn main() -> std::process::ExitCode {
    ward_supervisor::cli::main()
}
