//! The coreplex binary: the command line of the library ([`coreplex::cli`]).

fn main() -> std::process::ExitCode {
    coreplex::cli::main()
}
