//! The `fhirgate` binary: the command line lives in `fhirgate::cli`.

fn main() -> std::process::ExitCode {
    fhirgate::cli::main()
}
