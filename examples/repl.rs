//! The einjit REPL.
//!
//! ```text
//! cargo run --release --example repl                 # interactive (line editing, history)
//! cargo run --release --example repl -- FILE         # run a script
//! some-command | cargo run --release --example repl  # read commands from stdin
//! ```
//!
//! In script and stdin mode every line runs, each echoed after `>>> `, and
//! the exit status is 1 if any line failed.

#[path = "repl/session.rs"]
mod session;

use session::Session;
use std::io::{BufRead, IsTerminal};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.as_slice() {
        [] if std::io::stdin().is_terminal() => interactive(),
        [] => batch(std::io::stdin().lock().lines().map_while(Result::ok)),
        [path] => match std::fs::read_to_string(path) {
            Ok(text) => batch(text.lines().map(str::to_string)),
            Err(e) => {
                eprintln!("repl: cannot read {path}: {e}");
                2
            }
        },
        _ => {
            eprintln!("usage: repl [FILE]");
            2
        }
    };
    std::process::exit(code);
}

fn interactive() -> i32 {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("repl: no line editor ({e}); reading stdin");
            return batch(std::io::stdin().lock().lines().map_while(Result::ok));
        }
    };
    println!(
        "einjit — index-notation formulas compiled with Cranelift. :help for help, :quit to leave."
    );
    let mut session = Session::new();
    loop {
        match editor.readline(">>> ") {
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                let outcome = session.execute(&line);
                if !outcome.output.is_empty() {
                    println!("{}", outcome.output);
                }
                if outcome.quit {
                    return 0;
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(_) => return 0,
        }
    }
}

fn batch(lines: impl Iterator<Item = String>) -> i32 {
    let mut session = Session::new();
    let mut failed = Vec::new();
    for (n, line) in lines.enumerate() {
        println!(">>> {line}");
        let outcome = session.execute(&line);
        if !outcome.output.is_empty() {
            println!("{}", outcome.output);
        }
        if !outcome.ok {
            failed.push(n + 1);
        }
        if outcome.quit {
            break;
        }
    }
    if failed.is_empty() {
        0
    } else {
        let list: Vec<String> = failed.iter().map(|n| n.to_string()).collect();
        eprintln!("{} line(s) failed: {}", failed.len(), list.join(", "));
        1
    }
}
