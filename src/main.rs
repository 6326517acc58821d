fn main() -> std::process::ExitCode {
    keytrail::cli::main()
}
