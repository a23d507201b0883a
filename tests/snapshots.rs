//! The dump of every operation of the README's table — the variables'
//! ranges, the lowered loop nest and the automatic schedule — as insta
//! snapshots in the top-level `snapshots/` folder.

mod common;
use common::ops::operations;
use common::*;
use einjit::Formula;

#[test]
fn every_operation_lowers_to_its_snapshot() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for (name, src, shapes) in operations(7) {
            let shapes: Vec<(&str, &[usize])> =
                shapes.iter().map(|(n, s)| (*n, s.as_slice())).collect();
            let kernel = Formula::new(&src)
                .unwrap()
                .kernel(&shapes)
                .unwrap_or_else(|e| panic!("{e}"));
            let schedules: Vec<String> = kernel
                .scheduled_ir()
                .lines()
                .take_while(|l| l.starts_with("# schedule"))
                .map(str::to_string)
                .collect();
            let text = format!(
                "{}\n{}",
                kernel.lowered_ir().trim_end(),
                schedules.join("\n")
            );
            insta::assert_snapshot!(name, text, &src);
        }
    });
}

#[test]
fn dumps_are_deterministic() {
    let i = inputs(&[("I", rand(&[1, 2, 5, 5], 1)), ("W", rand(&[3, 2, 3, 3], 2))]);
    let src = "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..5, j in 0..5";
    assert_eq!(dump(src, &i), dump(src, &i));
}
