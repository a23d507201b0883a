//! The library API: formulas, kernels, the cache, outputs, schedules.

mod common;
use common::*;
use einjit::check::OutputSelection;
use einjit::schedule::Schedule;
use einjit::{ErrorKind, Formula, Kernel};

#[test]
fn formula_compiles_once_per_shape_signature() {
    let f = Formula::new("O[i,j] = A[i,k] * B[k,j]").unwrap();
    let (a, b) = (rand(&[3, 4], 1), rand(&[4, 5], 2));
    let out = f.run(&[("A", a.view()), ("B", b.view())]).unwrap();
    assert_close(
        &out["O"],
        &reference(
            "O[i,j] = A[i,k] * B[k,j]",
            &inputs(&[("A", a.clone()), ("B", b.clone())]),
        )["O"],
        1e-5,
    );
    f.run(&[("A", a.view()), ("B", b.view())]).unwrap();
    assert_eq!(f.compiled_count(), 1);
    let (a2, b2) = (rand(&[2, 4], 3), rand(&[4, 5], 4));
    f.run(&[("A", a2.view()), ("B", b2.view())]).unwrap();
    assert_eq!(f.compiled_count(), 2);
}

#[test]
fn runtime_errors_name_the_input() {
    let f = Formula::new("O[i] = A[i] * B[i]").unwrap();
    let a = rand(&[3], 1);
    let e = f.run(&[("A", a.view())]).unwrap_err();
    assert!(e.to_string().contains("unknown tensor `B`"), "{e}");
    assert!(
        e.to_string()
            .contains("no input of that name was given, and no earlier statement produces it"),
        "{e}"
    );
    let k = Kernel::compile("O[i] = A[i] * B[i]", &[("A", &[3]), ("B", &[3])]).unwrap();
    let e = k.run(&[("A", a.view())]).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::MissingInput("B".into()));
    let b = rand(&[4], 2);
    let e = k.run(&[("A", a.view()), ("B", b.view())]).unwrap_err();
    assert!(
        e.to_string()
            .contains("input `B` has shape [4], but the program was compiled for [3]"),
        "{e}"
    );
}

#[test]
fn outputs_can_be_selected() {
    let src = "T[i] = A[i] * 2\nO[i] = T[i] + 1";
    let a = rand(&[3], 1);
    let out = Formula::new(src).unwrap().run(&[("A", a.view())]).unwrap();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["O"]);
    let all = Formula::new(src)
        .unwrap()
        .with_outputs(OutputSelection::All);
    let out = all.run(&[("A", a.view())]).unwrap();
    assert_eq!(out.len(), 2);
    assert_close(&out["T"], &a.mapv(|x| x * 2.0), 1e-6);
}

#[test]
fn run_into_updates_the_callers_array() {
    let k = Kernel::compile("O[i] += A[i]", &[("A", &[3]), ("O", &[3])]).unwrap();
    let a = arr(&[3], &[1.0, 2.0, 3.0]);
    let mut o = arr(&[3], &[10.0, 20.0, 30.0]);
    k.run_into(&[("A", a.view())], &mut [("O", o.view_mut())])
        .unwrap();
    assert_eq!(o, arr(&[3], &[11.0, 22.0, 33.0]));
    // Wrong targets are refused before anything runs, naming the output.
    let mut wrong = arr(&[4], &[0.0; 4]);
    let e = k
        .run_into(&[("A", a.view())], &mut [("O", wrong.view_mut())])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("output `O` has shape [3], but the array given for it has shape [4]"),
        "{e}"
    );
    let (mut o1, mut o2) = (o.clone(), o.clone());
    let e = k
        .run_into(
            &[("A", a.view())],
            &mut [("O", o1.view_mut()), ("O", o2.view_mut())],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("`O` is given twice"), "{e}");
    assert_eq!(o1, o, "nothing ran");
    let e = k
        .run(&[("A", a.view()), ("O", o.view()), ("A", a.view())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`A` is given twice"), "{e}");
}

#[test]
fn run_into_writes_row_major_arrays_in_place() {
    // Two outputs: `O` given row-major (written in place, on one and two
    // threads: 300 x 200 is enough to split), `T` given as a transposed
    // view (computed apart, then assigned). Run twice into the same
    // arrays: the second run overwrites the first's results whole.
    let src = "T[i,j] = A[i,j] * 2; O[j,i] = T[i,j] + B[j,i]";
    let (a, b) = (rand(&[300, 200], 1), rand(&[200, 300], 2));
    let want = reference(src, &inputs(&[("A", a.clone()), ("B", b.clone())]));
    let f = Formula::new(src)
        .unwrap()
        .with_outputs(OutputSelection::All);
    for threads in [1, 2] {
        let k = f
            .compile(&[("A", a.shape()), ("B", b.shape())])
            .unwrap()
            .with_threads(threads);
        let mut o = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[200, 300]));
        let mut t_storage = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[200, 300]));
        let mut t = t_storage.view_mut().reversed_axes();
        assert!(!t.is_standard_layout());
        for _ in 0..2 {
            k.run_into(
                &[("A", a.view()), ("B", b.view())],
                &mut [("O", o.view_mut()), ("T", t.view_mut())],
            )
            .unwrap();
            assert_close(&o, &want["O"], 1e-5);
            assert_close(&t.to_owned(), &a.mapv(|x| x * 2.0), 1e-6);
        }
    }
    // `+=` into a row-major array not passed as an input: starts from its
    // contents (the array is read, so it is computed apart and copied).
    let k = Kernel::compile("O[i,j] += A[j,i]", &[("A", &[4, 3]), ("O", &[3, 4])]).unwrap();
    let a = rand(&[4, 3], 3);
    let mut o = rand(&[3, 4], 4);
    let expected = &o + &a.t();
    k.run_into(&[("A", a.view())], &mut [("O", o.view_mut())])
        .unwrap();
    assert_close(&o, &expected, 1e-6);
}

#[test]
fn user_schedules_apply_and_show_in_the_dump() {
    let src = "O[i,j] = A[i,k] * B[k,j]";
    let (a, b) = (rand(&[5, 3], 1), rand(&[3, 9], 2));
    let sched: Schedule = "split j 4; reorder i jo k ji; vectorize ji"
        .parse()
        .unwrap();
    let f = Formula::new(src).unwrap().with_schedules(vec![Some(sched)]);
    let k = f.kernel(&[("A", a.shape()), ("B", b.shape())]).unwrap();
    let ir = k.scheduled_ir();
    assert!(
        ir.starts_with("# schedule 1: split j 4; reorder i jo k ji; vectorize ji\n"),
        "{ir}"
    );
    assert!(ir.contains("B[k, 4*jo]x4"), "{ir}");
    let out = k.run(&[("A", a.view()), ("B", b.view())]).unwrap();
    assert_close(
        &out["O"],
        &reference(src, &inputs(&[("A", a), ("B", b)]))["O"],
        1e-5,
    );

    let bad = Formula::new(src)
        .unwrap()
        .with_schedules(vec![Some("vectorize i".parse().unwrap())]);
    let e = bad
        .kernel(&[("A", &[5, 3]), ("B", &[3, 9])])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "schedule error: `vectorize i`: cannot vectorize `i`: only the innermost loop can be"
        ),
        "{e}"
    );
    assert!(e.contains("1 | O[i,j] = A[i,k] * B[k,j]"), "{e}");

    // A directive that only fails once the nest is built (a vectorized loop
    // whose load does not step along it) points at its statement too, the
    // second of two.
    let two = "T[i,j] = A[i,j] * 2\nO[j,i] = T[i,j]";
    let bad = Formula::new(two).unwrap().with_schedules(vec![
        None,
        Some("split i 4; reorder j io ii; vectorize ii".parse().unwrap()),
    ]);
    let e = bad.kernel(&[("A", &[8, 8])]).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(
            "cannot vectorize `ii`: the load from T does not step forward along its last dimension with it"
        ),
        "{text}"
    );
    assert!(text.contains("2 | O[j,i] = T[i,j]"), "{text}");
    assert_eq!(
        e.span().map(|s| &two[s.start..s.end]),
        Some("O[j,i] = T[i,j]")
    );
}

#[test]
fn the_automatic_schedule_is_the_default() {
    let k = Kernel::compile(
        "O[i,j] = A[i,k] * B[k,j]",
        &[("A", &[12, 4]), ("B", &[4, 16])],
    )
    .unwrap();
    assert!(
        k.scheduled_ir().contains("accumulating") || k.scheduled_ir().contains("acc0"),
        "{}",
        k.scheduled_ir()
    );
    assert!(k.lowered_ir().contains("for k in 0..4:"));
}

/// With the empirical search on, compiling times the automatic schedule's
/// alternatives and keeps one of them; results are the reference's.
#[test]
fn searched_schedules_compute_the_same() {
    let src = "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..12, j in 0..13";
    let i = inputs(&[
        ("I", rand(&[1, 5, 12, 13], 1)),
        ("W", rand(&[7, 5, 3, 3], 2)),
    ]);
    let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
        i.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
    let shapes: Vec<(&str, &[usize])> = views.iter().map(|(n, a)| (*n, a.shape())).collect();
    let formula = Formula::new(src).unwrap().with_search(true);
    let kernel = formula.compile(&shapes).unwrap();
    let program = kernel.program();
    let candidates: Vec<einjit::schedule::Schedule> = program
        .statements
        .iter()
        .flat_map(|st| einjit::schedule::auto_candidates(program, st))
        .collect();
    assert!(candidates.len() >= 3, "{candidates:?}");
    assert!(
        kernel.schedules().iter().all(|s| candidates.contains(s)),
        "{:?}",
        kernel.schedules()
    );
    let want = reference(src, &i);
    assert_close(&kernel.run(&views).unwrap()["O"], &want["O"], 1e-4);
}

/// Storage that cannot be allocated is an error, not an abort: run in a
/// child process (this test again) whose address space is capped at 4 GB,
/// with a 6.4 GB output.
#[test]
fn storage_that_cannot_be_allocated_is_an_error() {
    if std::env::var("EINJIT_OOM_CHILD").is_ok() {
        let f = Formula::new("O[i,j] = 1 where i in 0..40000, j in 0..40000").unwrap();
        let e = f.run(&[]).unwrap_err().to_string();
        println!("child: {e}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 4000000 && exec '{}' --exact storage_that_cannot_be_allocated_is_an_error --nocapture --test-threads 1",
            exe.display()
        ))
        .env("EINJIT_OOM_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("child: error: cannot allocate 6400000000 bytes for `O`"),
        "{stdout}"
    );
}
