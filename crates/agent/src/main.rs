//! `hearth-agent`: see the library's docs for the layout.

fn main() -> std::process::ExitCode {
    hearth_agent::main()
}
