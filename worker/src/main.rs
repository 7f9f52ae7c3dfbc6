fn main() -> std::process::ExitCode {
    ward_worker::cli::main()
}
