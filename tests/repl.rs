//! The REPL's session: the seeds script's numbers, every command, error
//! recovery and number printing.

#[path = "../examples/repl/session.rs"]
mod session;

use session::{format_array, format_value, parse_literal, Session};

/// Run lines; return each line's output and whether it succeeded.
fn run(session: &mut Session, lines: &str) -> Vec<(String, bool)> {
    lines
        .lines()
        .map(|l| {
            let o = session.execute(l);
            (o.output, o.ok)
        })
        .collect()
}

#[test]
fn the_seeds_script_prints_the_seed_numbers() {
    let script = include_str!("../examples/seeds.ein");
    let mut s = Session::new();
    let out = run(&mut s, script);
    assert!(
        out.iter().all(|(_, ok)| *ok),
        "every line of seeds.ein succeeds"
    );
    let text: String = out
        .iter()
        .map(|(o, _)| o.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for expected in [
        "y: f32[2]\n[1.4, 3.2]",
        "G: f32[2, 2]\n[[0.7, 1.0],\n [1.5, 2.2]]",
        "c1: f32[3]\n[1.4, 2.0, 2.6]",
        "c2: f32[2, 2]\n[[3.0, 4.7],\n [6.7, 8.2]]",
        "c3: f32[2, 2]\n[[7.8,",
        "[[0.1, 0.2, 0.2, 0.4],\n [0.3, 0.4, 0.6, 0.8],\n [0.3, 0.6, 0.4, 0.8],\n [0.9, 1.2, 1.2, 1.6]]",
        "g1: f32[2, 2]\n[[21.0, 21.0],\n [4300.0, 4300.0]]",
        "dw: f32[2, 2]\n[[3.0, 5.0],\n [-3.0, -3.5]]",
        "bl: f32[1, 2]\n[[11.0, 21.0]]",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn a_bad_line_shows_a_caret_and_leaves_the_session_intact() {
    let mut s = Session::new();
    run(&mut s, "A = [1, 2, 3]");
    let out = run(&mut s, "O[i] = A[i] * Q[i]\nO[i] = A[i\nA = [[1, 2], [3]]\nA = zeros(99999999, 99999999, 99)\n:nope\nsave(Q, \"/tmp/x.npy\")\nW = load(\"/no/such.npy\")\nZ = frobnicate(3)");
    for (o, ok) in &out {
        assert!(!ok, "{o}");
        assert!(o.starts_with("error: "), "{o}");
        assert!(o.lines().last().unwrap().contains('^'), "caret line in {o}");
    }
    assert!(out[0].0.contains("unknown tensor `Q`"));
    assert!(out[2].0.contains("ragged array"));
    assert!(out[3].0.contains("is too large"));
    // Lines that once crashed the REPL: a caret inside a multi-byte
    // character, a literal nested 100000 deep, a zero-length axis beside
    // an axis too long for memory.
    let deep = format!("A = {}1{}", "[".repeat(100_000), "]".repeat(100_000));
    for line in [
        "A = [1, é]",
        "A = [1,2]é",
        &deep,
        "A = zeros(0, 18446744073709551615)",
    ] {
        let (o, ok) = &run(&mut s, line)[0];
        assert!(!ok && o.starts_with("error: "), "{o}");
    }
    assert!(run(&mut s, &deep)[0]
        .0
        .contains("lists nested more than 32 deep"));
    assert!(run(&mut s, "A = [1,2]é")[0].0.ends_with("  |          ^"));
    // A is unchanged by the failed lines.
    let (o, ok) = &run(&mut s, "A")[0];
    assert!(ok);
    assert_eq!(o, "A: f32[3]\n[1.0, 2.0, 3.0]");
}

#[test]
fn statements_update_tensors_and_commands_report_on_them() {
    let mut s = Session::new();
    let out = run(&mut s, "A = ones(2, 3)\nB = rand(3, 4)\nO[i,j] = A[i,k] * B[k,j]\nO[i,j] += O[i,j]; T[i] = O[i,0]\n:tensors\n:ir\n:clif\n:time\n:help");
    assert!(out.iter().all(|(_, ok)| *ok), "{out:?}");
    assert!(out[4].0.contains("O: f32[2, 4]") && out[4].0.contains("T: f32[2]"));
    assert!(out[5].0.contains("## lowered") && out[5].0.contains("## scheduled"));
    assert!(out[6].0.contains("function"));
    assert!(out[7].0.starts_with("compile ") && out[7].0.contains("ms, run "));
    assert!(out[8].0.contains(":schedule"));
    // rand is seeded: a new session gives the same numbers, in [0, 1).
    let mut t = Session::new();
    run(&mut t, "A = ones(2, 3)\nB = rand(3, 4)");
    assert_eq!(s.tensors["B"], t.tensors["B"]);
    assert!(s.tensors["B"].iter().all(|&x| (0.0..1.0).contains(&x)));
}

#[test]
fn schedules_from_the_repl() {
    let mut s = Session::new();
    run(&mut s, "A = rand(5, 3)\nB = rand(3, 9)");
    let out = run(&mut s, ":schedule split j 4; reorder i jo k ji; vectorize ji\nO[i,j] = A[i,k] * B[k,j]\n:ir\n:schedule auto");
    assert!(out.iter().all(|(_, ok)| *ok), "{out:?}");
    assert!(
        out[2]
            .0
            .contains("# schedule 1: split j 4; reorder i jo k ji; vectorize ji"),
        "{}",
        out[2].0
    );
    let (o, ok) = &run(&mut s, ":schedule vectorize q\nO[i,j] = A[i,k] * B[k,j]")[1];
    assert!(!ok && o.contains("no loop `q`"), "{o}");
}

#[test]
fn npy_files_round_trip_in_f32_and_load_from_f64() {
    let dir = std::env::temp_dir();
    let p32 = dir.join("einjit_repl_test32.npy");
    let p64 = dir.join("einjit_repl_test64.npy");
    ndarray_npy::write_npy(&p64, &ndarray::arr2(&[[1.5f64, 2.0], [3.0, 4.25]])).unwrap();
    let mut s = Session::new();
    let out = run(
        &mut s,
        &format!(
            "A = [[1, -2.5], [3e2, 4]]\nsave(A, \"{}\")\nB = load(\"{}\")\nC = load(\"{}\")",
            p32.display(),
            p32.display(),
            p64.display()
        ),
    );
    assert!(out.iter().all(|(_, ok)| *ok), "{out:?}");
    assert_eq!(s.tensors["A"], s.tensors["B"]);
    assert_eq!(
        s.tensors["C"].iter().copied().collect::<Vec<_>>(),
        vec![1.5, 2.0, 3.0, 4.25]
    );
}

#[test]
fn literals_and_number_printing() {
    let a = parse_literal("[[1, 2, 3], [4.5, -6, 7e-1]]").unwrap();
    assert_eq!(a.shape(), &[2, 3]);
    assert_eq!(
        a.iter().copied().collect::<Vec<_>>(),
        vec![1.0, 2.0, 3.0, 4.5, -6.0, 0.7]
    );
    assert!(parse_literal("[1, x]")
        .unwrap_err()
        .1
        .contains("`x` is not a number"));
    assert!(parse_literal("[[1], 2]").is_err());
    assert!(parse_literal("[]").is_err());
    assert_eq!(format_value(1.4000001), "1.4");
    assert_eq!(format_value(3.0), "3.0");
    assert_eq!(format_value(-0.25), "-0.25");
    assert_eq!(format_value(1e-7), "1.0000e-7");
    assert_eq!(format_value(f32::NEG_INFINITY), "-inf");
    let big =
        ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[40, 40]), |i| (i[0] * 40 + i[1]) as f32);
    let text = format_array(&big);
    assert!(
        text.starts_with("[[0.0, 1.0, 2.0, ..., 37.0, 38.0, 39.0],"),
        "{text}"
    );
    assert!(text.contains("..."));
    assert!(text.lines().count() < 10);
}

#[test]
fn blank_lines_comments_and_quit() {
    let mut s = Session::new();
    let out = run(
        &mut s,
        "\n   # just a comment\nA = [1, 2] # trailing comment",
    );
    assert!(
        out.iter()
            .all(|(o, ok)| *ok && (o.is_empty() || o == "A: f32[2]")),
        "{out:?}"
    );
    assert!(s.execute(":quit").quit);
}
