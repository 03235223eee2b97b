//! `thin`: the multi-call binary. Invoked as `thin_check …` (through a symlink or a copy) it
//! is that tool; invoked as `thin <tool> …` it runs `<tool>` (`check`, `thin_check`, …).

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use thin_tools::commands;

fn usage() -> ExitCode {
    eprintln!("usage: thin <tool> [options]   (or call the tool by its own name, e.g. thin_check)");
    eprintln!("tools:");
    for (name, _) in commands::TOOLS {
        eprintln!("  {name}");
    }
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some(argv0) = args.first() else {
        return usage();
    };
    let base = Path::new(argv0)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(tool) = commands::find(&base).filter(|_| base != "thin") {
        return tool(args);
    }
    let Some(name) = args.get(1).map(|s| s.to_string_lossy().into_owned()) else {
        return usage();
    };
    match commands::find(&name) {
        // The tool sees its own name as argv[0].
        Some(tool) => tool(
            std::iter::once(OsString::from(format!(
                "thin_{}",
                name.trim_start_matches("thin_")
            )))
            .chain(args.into_iter().skip(2))
            .collect(),
        ),
        None if name == "-h" || name == "--help" => {
            usage();
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("thin: unknown tool '{name}'");
            usage()
        }
    }
}
